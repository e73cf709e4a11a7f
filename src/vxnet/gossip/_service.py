"""A gossip node as a process runs it: membership core, Serf layer, store and trio driver.

The node is a Serf member in every respect Serf's tools look at: its node meta carries Serf tags
(``role``, ``vxnet``), it announces a join intent when it starts and a leave intent before it
leaves (so Serf shows it ``left``, not ``failed``), keeps Serf's Lamport clocks and answers
push-pulls with a state Serf accepts. User events and queries from Serf are witnessed and
otherwise ignored.

The replicated store (:mod:`._store`) rides on the same gossip: its deltas are piggybacked on
packets to vxnet peers, and every ``store_sync_interval`` the node runs the store's anti-entropy
exchange with one random live vxnet peer over the gossip TCP port.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import math
import random
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from vxnet import __version__
from vxnet.config import parse_hostport
from vxnet.gossip._clock import SystemWallClock
from vxnet.gossip._config import GossipTiming
from vxnet.gossip._driver import GossipDriver
from vxnet.gossip._errors import StoreError, WireError
from vxnet.gossip._keyring import Keyring, parse_key
from vxnet.gossip._keyring_file import read_keyring_file, write_keyring_file
from vxnet.gossip._layers import (
    FAST_SYNC_INTERVAL,
    NodeLayers,
    SerfLayer,
    StoreLayer,
    is_vxnet_meta,
)
from vxnet.gossip._membership import Membership
from vxnet.gossip._messages import NodeStatus
from vxnet.gossip._serf_codec import decode_tags, encode_tags
from vxnet.gossip._serf_queries import INTERNAL_PREFIX, decode_key_response, key_request
from vxnet.gossip._serf_state import MemberStatus
from vxnet.gossip._store import Store
from vxnet.gossip._store_records import Change, Record

if TYPE_CHECKING:
    from collections.abc import Callable
    from ipaddress import IPv4Address

    from vxnet.config import GossipSettings
    from vxnet.gossip._clock import WallClock
    from vxnet.gossip._membership_types import Member, MemberEvent

__all__ = [
    "GossipService",
    "Subscription",
    "member_json",
    "record_json",
    "resolve_advertise",
]

log = logging.getLogger("vxnet.gossip")

Address = tuple[str, int]
LEAVE_SPREAD_TIME = 1.0  # time for the Serf leave intent to spread before memberlist's leave
STORE_SYNC_INTERVAL = 10.0  # anti-entropy with one random vxnet peer this often (jittered)
QUERY_TIMEOUT_MULT = 16  # Serf's: a query lasts gossip interval x 16 x log10(n + 1)
KEY_QUERY_MIN_TIMEOUT = 10.0  # seconds a key query waits at most for members still to answer


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


class Subscription:
    """A consumer's feed of store changes (see :meth:`GossipService.subscribe`)."""

    def __init__(
        self,
        prefix: str,
        send: trio.MemorySendChannel[Change],
        receive: trio.MemoryReceiveChannel[Change],
    ) -> None:
        self.prefix = prefix
        self.send = send
        self.changes = receive
        self.overflowed = False


def _plain(value: Any) -> Any:
    """JSON-able copy of a stored value (read-only maps become dicts, bytes base64)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def record_json(record: Record) -> dict[str, Any]:
    """A store record as the API shows it."""
    return {
        "key": record.key,
        "value": _plain(record.value),
        "owner": record.owner,
        "version": {"hlc": record.version.hlc, "writer": record.version.writer},
    }


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


def _initial_keyring(keys: tuple[str, ...], keyring_file: Path | None) -> Keyring | None:
    """The keyring to start with: the keyring file's once it exists, else ``keys``.

    Raises:
        ValueError: The keyring file cannot be read or is not one.
    """
    if keyring_file is not None:
        try:
            if keyring_file.exists():
                keys = read_keyring_file(keyring_file)
        except OSError as exc:
            raise ValueError(f"gossip.keyring_file: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"gossip.keyring_file: {exc}") from None
    return Keyring.from_base64(*keys) if keys else None


def _key_summary(op: str, live: int, answers: Mapping[str, bytes]) -> dict[str, Any]:
    """Serf's ``KeyResponse`` from the members' answers (``streamKeyResp``)."""
    messages: dict[str, str] = {}
    keys: dict[str, int] = {}
    primary: dict[str, int] = {}
    failed = 0
    for node, payload in sorted(answers.items()):
        try:
            answer = decode_key_response(payload)
        except ValueError as exc:
            messages[node] = f"a bad answer: {exc}"
            failed += 1
            continue
        if not answer.result:
            failed += 1
        if answer.message:
            messages[node] = answer.message
        for k in answer.keys:
            keys[k] = keys.get(k, 0) + 1
        if answer.primary:
            primary[answer.primary] = primary.get(answer.primary, 0) + 1
    return {
        "op": op,
        "members": live,
        "answered": len(answers),
        "failed": failed,
        "messages": messages,
        "keys": keys,
        "primary_keys": primary,
    }


class GossipService:
    """One node of the gossip cluster, run by :meth:`serve` in a trio nursery.

    Args:
        settings: The ``[gossip]`` settings.
        role: ``agent`` or ``master``: the Serf tag ``role``.
        agent_ip: The agent's underlay address, advertised when binding to all addresses.
        tags: Extra Serf tags.
        clock: The wall clock the store's versions are built on (default: the system's).
        rng: The one source of randomness: the membership core's RNG is seeded from it, and it
            jitters and aims the store's anti-entropy (default: seeded by the system).
    """

    def __init__(
        self,
        settings: GossipSettings,
        *,
        role: str,
        agent_ip: IPv4Address | None = None,
        tags: Mapping[str, str] | None = None,
        clock: WallClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.clock: WallClock = clock or SystemWallClock()
        self.rng = rng or random.Random()
        self.name = settings.name or socket.gethostname()
        self.timing = GossipTiming.local() if settings.profile == "local" else GossipTiming.lan()
        self.keyring_file = Path(settings.keyring_file) if settings.keyring_file else None
        self.keyring = _initial_keyring(settings.keys, self.keyring_file)
        self._keys_saved = 0  # key changes by queries written to the keyring file
        self._keys_changed = trio.Event()
        self.tags = {"role": role, "vxnet": __version__, **(tags or {})}
        self.meta = encode_tags(self.tags)
        self._agent_ip = agent_ip
        self.serf = SerfLayer(self.name, self.timing.retransmit_mult, self.keyring)
        self.store = StoreLayer(
            Store(self.name, owner_grace=settings.record_grace),
            self.timing.retransmit_mult,
            self.clock.wall(),
        )
        self.layers = NodeLayers(
            self.serf,
            self.store,
            lambda: self.core.num_members,
            trio.current_time,
            self.clock.wall,
        )
        self.store_sync_interval = STORE_SYNC_INTERVAL
        self._stepped = trio.Event()  # set after every step of the core
        self.driver = GossipDriver(
            self._make_core,
            parse_hostport(settings.bind, any_port=True),
            on_events=self._on_events,
            on_step=self._on_step,
            frame_length=self.store.store.frame_length,
            on_frame=self._handle_store_frame,
        )
        self._subscriptions: list[Subscription] = []
        self._sync_wanted = trio.Event()
        self.synced = trio.Event()  # set once the store has been synced with a peer (see serve)
        self._waiting_slow = False
        self.sync_errors = 0
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
            rng=random.Random(self.rng.getrandbits(64)),
            meta=self.meta,
            timing=self.timing,
            keyring=self.keyring,
            delegate=self.layers,
        )
        self.serf.queue.put(self.serf.state.join_intent(self.name, now))
        return core

    def _on_events(self, events: list[MemberEvent]) -> None:
        now = trio.current_time()
        for event in events:
            if event.kind == "join":
                self.serf.state.notify_join(event.member.name)
                self.store.store.owner_up(event.member.name)
                if is_vxnet_meta(event.member.meta):
                    self.store.member_joined(event.member.name)
                    self._sync_wanted.set()
            elif event.kind == "leave":
                self.serf.state.notify_leave(event.member.name, now)
                self.store.store.owner_down(event.member.name, self.clock.wall())
            log.info(
                "member %s %s (%s:%d)",
                event.member.name,
                event.kind,
                event.member.addr,
                event.member.port,
            )

    async def serve(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled; ``task_status`` gets the advertised address once bound.

        :attr:`synced` is set after the first complete store exchange with a peer, or at once
        for a node with no seeds (it starts a new cluster, so its store is the whole store).
        Until then the store may lack records that the cluster holds: a consumer that would act
        on a record's *absence* (remove a route, stop answering a name) waits for it.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self.driver.serve)
            nursery.start_soon(self._sync_loop)
            nursery.start_soon(self._save_keys_loop)
            if not self.settings.seeds:
                self.synced.set()
            if self.settings.seeds:
                seeds = [await self._resolve(s) for s in self.settings.seeds]
                self.core.join(seeds, trio.current_time())
                self.driver.step()
            assert self.advertise is not None
            task_status.started(self.advertise)

    async def _save_keys_loop(self) -> None:
        """Write the keyring to ``gossip.keyring_file`` after a key query changed it."""
        while True:
            await self._keys_changed.wait()
            self._keys_changed = trio.Event()
            self._keys_saved = self.serf.state.queries.key_changes
            keyring = self.keyring
            assert keyring is not None  # only a keyring changes
            keys = keyring.keys
            if self.keyring_file is None:
                log.warning(
                    "gossip keyring changed by a key query (%d keys); not saved: without "
                    "gossip.keyring_file a restart goes back to gossip.keys",
                    len(keys),
                )
                continue
            try:
                await trio.to_thread.run_sync(write_keyring_file, self.keyring_file, keys)
            except OSError as exc:
                log.error("gossip keyring changed but not saved to %s: %s", self.keyring_file, exc)
                continue
            log.info("gossip keyring changed (%d keys); saved to %s", len(keys), self.keyring_file)

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
        if self.serf.state.queries.key_changes != self._keys_saved:
            self._keys_changed.set()
        changes = self.store.store.changes()
        if changes and self._subscriptions:
            self._publish(changes)
        if self._waiting_slow and self.store.backlogged(self.clock.wall()):
            self._sync_wanted.set()  # a bulk change is spreading: anti-entropy now, not later
        self._stepped.set()
        self._stepped = trio.Event()

    # --- the replicated store --------------------------------------------------------------------

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        """Write a record owned by this node; it spreads to every vxnet peer.

        Raises:
            ValueError: A bad key or value.
        """
        self.store.put(key, value, self.clock.wall())
        self.driver.step()

    def delete(self, key: str) -> bool:
        """Delete a record; False if there was none."""
        deleted = self.store.delete(key, self.clock.wall())
        self.driver.step()
        return deleted

    def subscribe(self, prefix: str = "", buffer: int = 1024) -> Subscription:
        """Changes to keys under ``prefix`` from now on, without ever blocking the gossip loop.

        A consumer that falls ``buffer`` changes behind has its channel closed with
        ``overflowed`` set: it must re-read the store and subscribe again.
        """
        send, receive = trio.open_memory_channel[Change](buffer)
        subscription = Subscription(prefix, send, receive)
        self._subscriptions.append(subscription)
        return subscription

    def _publish(self, changes: list[Change]) -> None:
        for subscription in list(self._subscriptions):
            for change in changes:
                if not change.key.startswith(subscription.prefix):
                    continue
                try:
                    subscription.send.send_nowait(change)
                except trio.WouldBlock:
                    subscription.overflowed = True
                    subscription.send.close()
                    self._subscriptions.remove(subscription)
                    break
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    self._subscriptions.remove(subscription)
                    break

    def _handle_store_frame(self, frame: bytes) -> bytes:
        try:
            return self.store.handle_sync(frame, self.clock.wall())
        except StoreError as exc:
            self.sync_errors += 1
            raise WireError(f"store sync: {exc}") from exc

    async def _sync_loop(self) -> None:
        while True:
            jitter = self.rng.uniform(0.5, 1.5)
            delay = self.store.sync_delay(self.store_sync_interval, jitter, self.clock.wall())
            self._waiting_slow = delay > 2 * FAST_SYNC_INTERVAL
            with trio.move_on_after(delay):
                await self._sync_wanted.wait()
            self._waiting_slow = False
            self._sync_wanted = trio.Event()
            await self.sync_once(self.store.take_sync_target())

    async def sync_once(self, target: str | None = None) -> bool:
        """Run the store's anti-entropy with ``target`` (default: a random live vxnet peer).

        Returns:
            Whether the exchange completed.
        """
        core = self.core
        peers = [
            m
            for m in core.members()
            if m.name != self.name and m.status is NodeStatus.ALIVE and is_vxnet_meta(m.meta)
        ]
        chosen = [m for m in peers if m.name == target] or peers
        if not chosen:
            return False
        peer = self.rng.choice(chosen)
        frame: bytes | None = self.store.sync_request()
        while frame is not None:
            deadline = trio.current_time() + self.timing.tcp_timeout
            reply = await self.driver.exchange((peer.addr, peer.port), frame, deadline)
            if reply is None:
                return False
            try:
                frame = self.store.sync_step(reply, self.clock.wall())
            except StoreError as exc:
                self.sync_errors += 1
                log.debug("store sync with %s: %s", peer.name, exc)
                return False
        self.driver.step()
        self.synced.set()
        return True

    def records(self, prefix: str = "", *, live: bool = False) -> list[dict[str, Any]]:
        """The store's records under ``prefix`` as JSON-able dicts (``live``: hide dead owners)."""
        store = self.store.store
        items = store.live_items(prefix, self.clock.wall()) if live else store.items(prefix)
        return [record_json(r) for r in items]

    def hidden_owners(self) -> frozenset[str]:
        """Owners whose records ``records(live=True)`` hides now (down beyond the grace)."""
        return self.store.store.hidden_owners(self.clock.wall())

    async def key_query(self, op: str, key: str | None = None) -> dict[str, Any]:
        """Run a Serf key query across the cluster, as ``serf keys`` does: ``op`` is ``list``,
        ``install``, ``use`` or ``remove`` (the last three with ``key``, base64). Every member
        (vxnet or Serf) answers with its own keyring; this waits for all the live members, or
        Serf's query timeout.

        Returns:
            ``{"op", "members", "answered", "failed", "messages": {node: text}, "keys":
            {key: count}, "primary_keys": {key: count}}``, as Serf's ``KeyResponse``.

        Raises:
            ValueError: An unknown ``op``, or a key that is not 16, 24 or 32 bytes of base64.
        """
        names = {"list": "list-keys", "install": "install-key", "use": "use-key"}
        names["remove"] = "remove-key"
        if op not in names:
            raise ValueError(f"unknown key operation {op!r} (want list, install, use or remove)")
        if (key is None) != (op == "list"):
            raise ValueError("list takes no key; install, use and remove take one")
        payload = key_request(parse_key(key)) if key is not None else b""
        core = self.core
        live = sum(1 for m in core.members() if m.status is not NodeStatus.DEAD)
        # Serf's query timeout, at least KEY_QUERY_MIN_TIMEOUT: the wait ends as soon as every
        # live member answered, and a loaded member still answers within the query's deadline.
        serf_timeout = self.timing.gossip_interval * QUERY_TIMEOUT_MULT * math.log10(live + 1)
        timeout = max(math.ceil(serf_timeout * 10) / 10, KEY_QUERY_MIN_TIMEOUT)
        assert self.advertise is not None
        host, port = self.advertise
        queries = self.serf.state.queries
        query, message = queries.start(
            INTERNAL_PREFIX + names[op],
            payload,
            query_id=self.rng.getrandbits(32),
            addr=ipaddress.ip_address(host).packed,
            port=port,
            timeout=timeout,
        )
        self.serf.queue.put(message)
        self.driver.step()
        with trio.move_on_after(timeout):
            await self._wait_for(lambda: len(queries.answers(query)) >= live)
        answers = queries.close(query)
        return _key_summary(op, live, answers)

    def members(self) -> list[dict[str, Any]]:
        """Every known member, as JSON-able dicts."""
        return [member_json(m, self.serf.state.member_status(m.name)) for m in self.core.members()]
