"""A gossip node as a process runs it: membership core, Serf layer and trio driver together.

The node is a Serf member in every respect Serf's tools look at: its node meta carries Serf tags
(``role``, ``vxnet``), it announces a join intent when it starts and a leave intent before it
leaves (so Serf shows it ``left``, not ``failed``), keeps Serf's Lamport clocks and answers
push-pulls with a state Serf accepts. User events and queries from Serf are witnessed and
otherwise ignored.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import socket
from typing import TYPE_CHECKING, Any

import trio

from vxnet import __version__
from vxnet.config import parse_hostport
from vxnet.gossip._config import GossipTiming
from vxnet.gossip._driver import GossipDriver
from vxnet.gossip._errors import WireError
from vxnet.gossip._keyring import Keyring
from vxnet.gossip._messages import NodeStatus
from vxnet.gossip._queue import BroadcastQueue
from vxnet.gossip._serf import MemberStatus, SerfState, decode_tags, encode_tags
from vxnet.gossip._swim import Member, MemberEvent, Membership

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from ipaddress import IPv4Address

    from vxnet.config import GossipSettings

__all__ = ["GossipService", "member_json", "resolve_advertise"]

log = logging.getLogger("vxnet.gossip")

Address = tuple[str, int]
LEAVE_SPREAD_TIME = 1.0  # time for the Serf leave intent to spread before memberlist's leave


class _SerfLayer:
    """The membership core's delegate: Serf's intents and push-pull state."""

    def __init__(self, name: str, retransmit_mult: int) -> None:
        self.state = SerfState(name)
        self.queue = BroadcastQueue(retransmit_mult)
        self.num_members = 1
        self.errors = 0

    def broadcasts(self, overhead: int, limit: int, peer_meta: bytes | None) -> list[bytes]:
        return self.queue.take(overhead, limit, self.num_members)

    def notify_user(self, payload: bytes, now: float) -> None:
        self._rebroadcast("Serf message", lambda: self.state.receive(payload, now))

    def local_state(self, join: bool) -> bytes:
        return self.state.local_state(join)

    def merge_remote_state(self, data: bytes, join: bool, now: float) -> None:
        self._rebroadcast("Serf push-pull state", lambda: self.state.merge_remote_state(data, now))

    def _rebroadcast(self, what: str, handle: Callable[[], list[bytes]]) -> None:
        """Run ``handle`` on a peer's bytes and queue what it says to pass on; count bad input."""
        try:
            out = handle()
        except WireError as exc:
            self.errors += 1
            log.debug("bad %s: %s", what, exc)
            return
        for message in out:
            self.queue.put(message)

    def next_deadline(self) -> float:
        deadline = self.state.next_deadline()
        return math.inf if deadline is None else deadline

    def tick(self, now: float) -> None:
        self.state.tick(now)


def resolve_advertise(
    settings: GossipSettings, bound: Address, agent_ip: IPv4Address | None
) -> Address:
    """The address others should reach this node at; see ``gossip.advertise``.

    Raises:
        ValueError: Nothing tells which address to advertise.
    """
    if settings.advertise is not None:
        return parse_hostport(settings.advertise)
    host, port = bound
    if not ipaddress.ip_address(host).is_unspecified:
        return host, port
    if agent_ip is not None:
        return str(agent_ip), port
    for seed in settings.seeds:
        seed_host, seed_port = parse_hostport(seed)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((seed_host, seed_port))  # sends nothing: only picks a route
                return probe.getsockname()[0], port
        except OSError:
            continue
    raise ValueError(
        "cannot tell which address to advertise: bind to a specific address, or set "
        "gossip.advertise (or agent.ip)"
    )


def member_json(member: Member, serf_status: MemberStatus | None) -> dict[str, Any]:
    """A member as the API and ``vxnet members`` show it (Serf's status words)."""
    if member.status is NodeStatus.LEFT or serf_status is MemberStatus.LEFT:
        status = "left"
    elif member.status is NodeStatus.DEAD:
        status = "left" if serf_status is MemberStatus.LEAVING else "failed"
    elif serf_status is MemberStatus.LEAVING:
        status = "leaving"
    else:
        status = "suspect" if member.status is NodeStatus.SUSPECT else "alive"
    try:
        tags = decode_tags(member.meta)
    except WireError:
        tags = {}
    return {
        "name": member.name,
        "addr": member.addr,
        "port": member.port,
        "status": status,
        "tags": tags,
        "incarnation": member.incarnation,
        "protocol": member.protocol_max,
    }


class GossipService:
    """One node of the gossip cluster, run by :meth:`serve` in a trio nursery.

    Args:
        settings: The ``[gossip]`` settings.
        role: ``agent`` or ``master``: the Serf tag ``role``.
        agent_ip: The agent's underlay address, advertised when binding to all addresses.
        tags: Extra Serf tags.
    """

    def __init__(
        self,
        settings: GossipSettings,
        *,
        role: str,
        agent_ip: IPv4Address | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name or socket.gethostname()
        self.timing = GossipTiming.local() if settings.profile == "local" else GossipTiming.lan()
        self.keyring = Keyring.from_base64(*settings.keys) if settings.keys else None
        self.tags = {"role": role, "vxnet": __version__, **(tags or {})}
        self.meta = encode_tags(self.tags)
        self._agent_ip = agent_ip
        self.serf = _SerfLayer(self.name, self.timing.retransmit_mult)
        self._stepped = trio.Event()  # set after every step of the core
        self.driver = GossipDriver(
            self._make_core,
            parse_hostport(settings.bind, any_port=True),
            on_events=self._on_events,
            on_step=self._on_step,
        )
        self.advertise: Address | None = None

    @property
    def core(self) -> Membership:
        if self.driver.core is None:
            raise RuntimeError("the gossip service is not running")
        return self.driver.core

    def _make_core(self, bound: Address, now: float) -> Membership:
        host, port = resolve_advertise(self.settings, bound, self._agent_ip)
        self.advertise = (host, port)
        core = Membership(
            self.name,
            ipaddress.ip_address(host).packed,
            port,
            now=now,
            rng=random.Random(),
            meta=self.meta,
            timing=self.timing,
            keyring=self.keyring,
            delegate=self.serf,
        )
        self.serf.queue.put(self.serf.state.join_intent(self.name, now))
        return core

    def _on_events(self, events: list[MemberEvent]) -> None:
        now = trio.current_time()
        for event in events:
            if event.kind == "join":
                self.serf.state.notify_join(event.member.name)
            elif event.kind == "leave":
                self.serf.state.notify_leave(event.member.name, now)
            log.info(
                "member %s %s (%s:%d)",
                event.member.name,
                event.kind,
                event.member.addr,
                event.member.port,
            )
        self.serf.num_members = self.core.num_members

    async def serve(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled; ``task_status`` gets the advertised address once bound."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.driver.serve)
            if self.settings.seeds:
                seeds = [await self._resolve(s) for s in self.settings.seeds]
                self.core.join(seeds, trio.current_time())
                self.driver.step()
            assert self.advertise is not None
            task_status.started(self.advertise)

    async def _resolve(self, seed: str) -> Address:
        host, port = parse_hostport(seed)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            host = str(infos[0][4][0])
        return host, port

    async def leave(self, grace: float = 5.0) -> None:
        """Leave gracefully: Serf's leave intent first, then memberlist's; wait until spread."""
        core = self.core
        self.serf.queue.put(self.serf.state.leave_intent(self.name, trio.current_time()))
        self.driver.step()
        with trio.move_on_after(min(LEAVE_SPREAD_TIME, grace)):
            await self._wait_for(lambda: not self.serf.queue)
        core.leave(trio.current_time(), timeout=grace)
        self.driver.step()
        with trio.move_on_after(grace):
            await self._wait_for(lambda: core.left)

    async def _wait_for(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._stepped.wait()

    def _on_step(self) -> None:
        self._stepped.set()
        self._stepped = trio.Event()

    def members(self) -> list[dict[str, Any]]:
        """Every known member, as JSON-able dicts."""
        return [member_json(m, self.serf.state.member_status(m.name)) for m in self.core.members()]
