"""Deterministic simulation of a gossip cluster, in one trio task under a mock clock.

Every node is a :class:`~vxnet.gossip.Membership` core; the :class:`SimNetwork` carries their
datagrams and streams through one event heap, with seeded loss, delay (and so reordering),
duplication, partitions (also one-way) and crashes. Time is trio's: run it under
``trio.testing.MockClock(autojump_threshold=0)`` and a simulated hour takes only the CPU time its
events need. Given the same seed, a run is the same run.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
import trio.lowlevel

from vxnet.gossip._config import GossipTiming
from vxnet.gossip._errors import StoreError
from vxnet.gossip._layers import FAST_SYNC_INTERVAL, NodeLayers, StoreLayer
from vxnet.gossip._membership import Membership
from vxnet.gossip._messages import (
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    PROTOCOL_SPOKEN,
    Ack,
    ErrorResponse,
    NodeStatus,
    Ping,
    PushNodeState,
    PushPull,
    User,
)
from vxnet.gossip._serf_codec import encode_tags
from vxnet.gossip._wire import StreamDecoder, WireError
from vxnet.testing.simtime import EventQueue

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from trio.testing import MockClock

    from vxnet.gossip._membership_types import StreamRequest
    from vxnet.gossip._store import Store


__all__ = ["SimNetwork", "SimNode"]

Address = tuple[str, int]
PORT = 7946
SIM_BASE = ipaddress.IPv4Address("198.18.0.0")


@dataclass(slots=True)
class SimNode:
    """One simulated node: a membership core, its store if any, and whether it runs."""

    name: str
    addr: Address
    core: Membership
    store: StoreLayer | None = None
    up: bool = True
    wake: float = 0.0
    skew: float = 0.0  # this node's wall clock minus the simulation's
    next_sync: float = 0.0
    sync_token: int = 0  # the scheduled sync that is current
    generation: int = 0  # bumped by a restart: timers of the old incarnation stop


@dataclass(slots=True)
class _Faults:
    loss: float = 0.0
    duplicate: float = 0.0
    delay: tuple[float, float] = (0.0005, 0.005)
    blocked: set[tuple[str, str]] = field(default_factory=set)  # (from, to) pairs


class SimNetwork:
    """A simulated network of gossip nodes. All randomness comes from ``seed``."""

    def __init__(
        self,
        seed: int,
        *,
        timing: GossipTiming | None = None,
        compress_streams: bool = False,
        clock: MockClock | None = None,
        store: Callable[[str], Store] | None = None,
        store_sync_interval: float = 10.0,
        wall_epoch: float = 1.8e9,
    ) -> None:
        self.store_factory = store
        self.store_sync_interval = store_sync_interval
        self.wall_epoch = wall_epoch  # the store's versions need a wall clock: sim time + epoch
        self.rng = random.Random(seed)
        self.timing = timing or GossipTiming.lan()
        self.compress_streams = compress_streams
        self.faults = _Faults()
        self.nodes: dict[str, SimNode] = {}
        self._by_addr: dict[Address, SimNode] = {}
        self.events = EventQueue(clock)
        self.packets = 0
        self.bytes = 0
        self.sync_bytes = 0
        self.started = 0.0

    # --- building --------------------------------------------------------------------------------

    def add_node(
        self, name: str, *, meta: bytes = b"", now: float | None = None, skew: float = 0.0
    ) -> SimNode:
        t = trio.current_time() if now is None else now
        old = self.nodes.get(name)
        addr = old.addr if old is not None else (str(SIM_BASE + len(self.nodes) + 1), PORT)
        node = SimNode(name, addr, core=None, skew=skew)  # type: ignore[arg-type]
        layers = None
        if self.store_factory is not None:
            node.store = StoreLayer(
                self.store_factory(name), self.timing.retransmit_mult, self._wall(node)
            )
            layers = NodeLayers(
                None,
                node.store,
                lambda: node.core.num_members,
                trio.current_time,
                lambda: self._wall(node),
            )
            meta = meta or encode_tags({"vxnet": "sim"})
        node.core = Membership(
            name,
            ipaddress.ip_address(addr[0]).packed,
            PORT,
            now=t,
            rng=random.Random(self.rng.getrandbits(64)),
            meta=meta,
            timing=self.timing,
            delegate=layers,
            compress_streams=self.compress_streams,
        )
        if old is not None:
            node.generation = old.generation + 1
        self.nodes[name] = node
        self._by_addr[addr] = node
        self._schedule_wake(node, t)
        if node.store is not None:
            self._schedule_sync(node, t + self.rng.uniform(0, self.store_sync_interval))
        return node

    def restart(self, name: str, seeds: Iterable[str]) -> SimNode:
        """Start a crashed node again, with empty memory (its store too), and join ``seeds``."""
        old = self.nodes[name]
        old.up = False
        node = self.add_node(name, skew=old.skew)
        self.join(name, seeds)
        return node

    # --- the store ----------------------------------------------------------------------------

    def _wall(self, node: SimNode) -> float:
        return self.wall_epoch + trio.current_time() + node.skew

    def put(self, name: str, key: str, value: Mapping[str, Any]) -> None:
        node = self.nodes[name]
        assert node.store is not None
        node.store.put(key, value, self._wall(node))
        self._flush(node, trio.current_time())

    def delete(self, name: str, key: str) -> None:
        node = self.nodes[name]
        assert node.store is not None
        node.store.delete(key, self._wall(node))
        self._flush(node, trio.current_time())

    def stores_agree(self) -> bool:
        """Every live node with a store holds the same records."""
        views = [
            sorted((r.key, r.version, r.value is None) for r in n.store.store.records())
            for n in self.live()
            if n.store is not None
        ]
        return all(v == views[0] for v in views[1:])

    def _schedule_sync(self, node: SimNode, when: float) -> None:
        node.sync_token += 1
        node.next_sync = when
        token = node.sync_token

        def fire(t: float) -> None:
            if node.sync_token != token or self.nodes[node.name] is not node:
                return
            assert node.store is not None
            if node.up:
                self._start_sync(node, t, node.store.take_sync_target())
            jitter = self.rng.uniform(0.5, 1.5)
            delay = node.store.sync_delay(self.store_sync_interval, jitter, self._wall(node))
            self._schedule_sync(node, t + delay)

        self.events.push(when, fire)

    def _sync_now(self, node: SimNode, now: float) -> None:
        if node.up and node.store is not None and self.nodes.get(node.name) is node:
            self._start_sync(node, now, node.store.take_sync_target())

    def _start_sync(self, node: SimNode, now: float, target: str | None = None) -> None:
        assert node.store is not None
        if target is not None and node.core.member(target) is not None:
            peer = self.nodes.get(target)
        else:
            peer_name = node.core.random_alive_member()
            peer = None if peer_name is None else self.nodes.get(peer_name)
        if peer is None or peer.store is None:
            return
        self._store_round(node, peer, node.store.sync_request(), now)

    def _store_round(self, src: SimNode, dst: SimNode, frame: bytes, now: float) -> None:
        """One request/response of the store's anti-entropy, carried like a TCP exchange."""
        self.bytes += len(frame)
        self.sync_bytes += len(frame)
        if not self._reachable(src, dst) or not self._reachable(dst, src):
            return

        def serve(t: float) -> None:
            if not dst.up or dst.store is None:
                return
            try:
                reply = dst.store.handle_sync(frame, self._wall(dst))
            except StoreError:
                return
            self._flush(dst, t)
            self.bytes += len(reply)
            self.sync_bytes += len(reply)

            def answer(t2: float) -> None:
                if not src.up or src.store is None or not self._reachable(dst, src):
                    return
                try:
                    follow_up = src.store.sync_step(reply, self._wall(src))
                except StoreError:
                    return
                self._flush(src, t2)
                if follow_up is not None:
                    self._store_round(src, dst, follow_up, t2)

            self.events.push(t + self._delay(), answer)

        self.events.push(now + self._delay(), serve)

    def form(self, count: int, prefix: str = "n") -> list[str]:
        """Add ``count`` nodes that already know each other (a formed cluster, no join storm)."""
        now = trio.current_time()
        nodes = [self.add_node(f"{prefix}{i}", now=now) for i in range(count)]
        vsn = bytes([PROTOCOL_MIN, PROTOCOL_MAX, PROTOCOL_SPOKEN, 2, 5, 5])
        states = [
            PushNodeState(
                n.name, ipaddress.ip_address(n.addr[0]).packed, PORT, meta, 1, NodeStatus.ALIVE, vsn
            )
            for n in nodes
            for meta in [n.core.self_meta]
        ]
        for n in nodes:
            n.core.adopt(states, now)
            self._schedule_wake(n, now)
        return [n.name for n in nodes]

    def join(self, name: str, seeds: Iterable[str]) -> None:
        node = self.nodes[name]
        now = trio.current_time()
        node.core.join([self.nodes[s].addr for s in seeds], now)
        self._flush(node, now)

    # --- faults ----------------------------------------------------------------------------------

    def set_loss(self, loss: float) -> None:
        self.faults.loss = loss

    def set_duplicate(self, rate: float) -> None:
        self.faults.duplicate = rate

    def set_delay(self, low: float, high: float) -> None:
        self.faults.delay = (low, high)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between members of different groups (both directions)."""
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for x in a:
                    for y in b:
                        self.faults.blocked.add((x, y))
                        self.faults.blocked.add((y, x))

    def block(self, src: str, dst: str) -> None:
        """Cut the link from ``src`` to ``dst`` only (a one-way partition)."""
        self.faults.blocked.add((src, dst))

    def heal(self) -> None:
        """Remove partitions, loss and duplication (delays stay)."""
        self.faults = _Faults(delay=self.faults.delay)

    def crash(self, name: str) -> None:
        """Stop a node without a word: it neither sends nor receives again."""
        self.nodes[name].up = False

    def leave(self, name: str) -> None:
        node = self.nodes[name]
        now = trio.current_time()
        node.core.leave(now)
        self._flush(node, now)

    # --- running ---------------------------------------------------------------------------------

    async def run_for(self, seconds: float) -> None:
        await self.run_until(trio.current_time() + seconds)

    async def run_until(
        self, deadline: float, until: Callable[[], bool] | None = None, check_every: float = 0.1
    ) -> bool:
        """Process events up to ``deadline``; stop early once ``until()`` is true.

        Returns:
            Whether ``until()`` held at the end (True when no condition was given).
        """
        next_check = trio.current_time()
        steps = 0
        while True:
            now = trio.current_time()
            if until is not None and now >= next_check:
                if until():
                    return True
                next_check = now + check_every
            upcoming = self.events.next_time
            if until is not None and next_check < min(upcoming, deadline):
                await self.events.advance_to(next_check)
                continue
            if upcoming > deadline:
                await self.events.advance_to(deadline)
                return until() if until is not None else True
            await self.events.advance_to(upcoming)
            self.events.run_next()
            steps += 1
            if steps % 2000 == 0:
                await trio.lowlevel.checkpoint()  # let other tasks (and cancellation) in

    # --- views -----------------------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up and not n.core.left]

    def view(self, name: str) -> dict[str, NodeStatus]:
        return {m.name: m.status for m in self.nodes[name].core.members()}

    def converged(self) -> bool:
        """Every live node sees exactly the live nodes alive, and no other node alive."""
        live = {n.name for n in self.live()}
        for name in live:
            alive = {m for m, s in self.view(name).items() if s is NodeStatus.ALIVE}
            if alive != live:
                return False
        return True

    def knows(self, name: str, status: NodeStatus, observers: Iterable[SimNode]) -> int:
        """How many of ``observers`` see ``name`` with ``status``."""
        count = 0
        for o in observers:
            m = o.core.member(name)
            if (m is not None and m.status is status) or (
                m is None and status in (NodeStatus.DEAD, NodeStatus.LEFT) and name in self.nodes
            ):
                count += 1
        return count

    # --- internals -------------------------------------------------------------------------------

    def _schedule_wake(self, node: SimNode, now: float) -> None:
        wake = max(node.core.next_deadline(), now)
        node.wake = wake

        def fire(t: float) -> None:
            if node.wake != wake or not node.up:
                return
            node.core.tick(t)
            self._flush(node, t)

        self.events.push(wake, fire)

    def _flush(self, node: SimNode, now: float) -> None:
        if not node.up:
            return
        for addr, data in node.core.datagrams_to_send():
            self._send_datagram(node, addr, data, now)
        for request in node.core.streams_to_open():
            self._open_stream(node, request, now)
        events = node.core.events()
        if (
            node.store is not None
            and node.next_sync > now + FAST_SYNC_INTERVAL
            and node.store.backlogged(self._wall(node))
        ):
            self._schedule_sync(node, now + self.rng.uniform(0, FAST_SYNC_INTERVAL))
        if node.store is not None:
            for event in events:
                if event.kind == "join":
                    node.store.store.owner_up(event.member.name)
                    if event.member.name != node.name:
                        node.store.member_joined(event.member.name)
                        self.events.push(now, functools.partial(self._sync_now, node))
                elif event.kind == "leave":
                    node.store.store.owner_down(event.member.name, self._wall(node))
        self._schedule_wake(node, now)

    def _delay(self) -> float:
        low, high = self.faults.delay
        return self.rng.uniform(low, high)

    def _reachable(self, src: SimNode, dst: SimNode) -> bool:
        return dst.up and (src.name, dst.name) not in self.faults.blocked

    def _send_datagram(self, src: SimNode, addr: Address, data: bytes, now: float) -> None:
        self.packets += 1
        self.bytes += len(data)
        dst = self._by_addr.get(addr)
        if dst is None or not self._reachable(src, dst):
            return
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            if self.rng.random() < self.faults.loss:
                continue

            def deliver(t: float, dst: SimNode = dst) -> None:
                if not dst.up:
                    return
                dst.core.receive_packet(data, src.addr, t)
                self._flush(dst, t)

            self.events.push(now + self._delay(), deliver)

    def _open_stream(self, src: SimNode, request: StreamRequest, now: float) -> None:
        self.bytes += len(request.payload)
        dst = self._by_addr.get(request.addr)
        if dst is None or not self._reachable(src, dst) or not self._reachable(dst, src):
            return  # the requester times out by itself

        def serve(t: float, dst: SimNode = dst) -> None:
            if not dst.up:
                return
            msg = _decode_stream(request.payload)
            if msg is None:
                return
            reply = dst.core.handle_stream(msg, t)
            self._flush(dst, t)
            if reply is None:
                return
            self.bytes += len(reply)
            answer = _decode_stream(reply)

            def respond(t2: float) -> None:
                if not src.up or not self._reachable(dst, src):
                    return
                if isinstance(answer, PushPull | Ack | ErrorResponse):
                    src.core.stream_reply(request.id, answer, t2)
                    self._flush(src, t2)

            self.events.push(t + self._delay(), respond)

        self.events.push(now + self._delay(), serve)


def _decode_stream(data: bytes) -> PushPull | Ping | Ack | User | ErrorResponse | None:
    decoder = StreamDecoder()
    try:
        decoder.feed(data)
        msg = decoder.next_message()
        decoder.eof()
    except WireError:
        return None
    return msg
