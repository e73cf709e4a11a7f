"""SWIM membership with the Lifeguard refinements: the sans-IO core of the gossip layer.

The core is fed packets, stream messages and the current time, and says what to send, which
streams to open and when it next needs to be woken; it never touches a socket, a clock or a global
random generator (the RNG is a parameter). Its rules are memberlist 0.2's (``state.go``):

Probing, once per probe interval, round-robin over a shuffled member list:
  * ping the member directly (a suspect member also gets our suspicion, in the same packet);
  * no ack within ``probe_timeout``: ask ``indirect_checks`` random live members to ping it for us
    (with a nack request when they speak protocol >= 4) and try a ping over TCP (protocol >= 3);
  * no ack by the end of the probe interval: the member becomes suspect.

Lifeguard:
  * local health awareness: a score from 0 to ``awareness_max_multiplier - 1`` that stretches our
    probe interval; a successful probe lowers it by one; a failed probe raises it by the number of
    nacks that did not come (by one if none were expected); having to refute a suspicion raises it
    by one;
  * dynamic suspicion: a suspicion starts at ``max`` timeout and shrinks towards ``min`` as
    ``k = suspicion_mult - 2`` independent confirmations arrive
    (``max - log(c + 1) / log(k + 1) * (max - min)``);
  * nacks: an indirect prober that got no ack tells us so; missing nacks point at ourselves.

Dissemination: alive, suspect and dead messages go into a transmit-limited queue (newer news of a
member replaces older) and are piggybacked on every packet we send, and gossiped to
``gossip_nodes`` random members each ``gossip_interval`` (dead ones for
``gossip_to_the_dead_time`` too). Every ``push_pull_interval`` (stretched for large clusters) we
exchange full state over TCP with one random member.

Incarnations: only the member itself raises its incarnation, to refute a suspicion or a death
claim at its own or a higher incarnation. Dead from itself means left. A member stays in the list
as dead or left until a probe round ends after ``gossip_to_the_dead_time``, then it is reaped.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vxnet.gossip._config import GossipTiming
from vxnet.gossip._lifeguard import Awareness, Suspicion, push_pull_scale, suspicion_timeout
from vxnet.gossip._membership_types import (
    Address,
    Delegate,
    Member,
    MemberEvent,
    NoDelegate,
    Stats,
    StreamRequest,
)
from vxnet.gossip._messages import (
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    PROTOCOL_SPOKEN,
    Ack,
    Alive,
    Dead,
    ErrorResponse,
    IndirectPing,
    Message,
    MessageType,
    Nack,
    NodeStatus,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    User,
)
from vxnet.gossip._queue import BroadcastQueue
from vxnet.gossip._wire import (
    PartialPacketError,
    WireError,
    decode_packet,
    encode_message,
    encode_packet,
    encode_stream,
)

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from vxnet.gossip._keyring import Keyring

__all__ = ["Membership"]

COMPOUND_HEADER_OVERHEAD = 2
COMPOUND_OVERHEAD = 2
USER_MSG_OVERHEAD = 1
ENCRYPT_OVERHEAD = 1 + 12 + 16  # version, nonce, GCM tag
CRC_OVERHEAD = 5
META_MAX_SIZE = 512


@functools.lru_cache(maxsize=65536)
def _address(addr: bytes, port: int) -> Address:
    return str(ipaddress.ip_address(addr)), port


@dataclass(slots=True)
class _Node:
    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: NodeStatus
    state_change: float
    vsn: bytes

    @property
    def pmax(self) -> int:
        return self.vsn[1] if len(self.vsn) > 1 else PROTOCOL_MAX

    @property
    def address(self) -> Address:
        return _address(self.addr, self.port)

    def snapshot(self) -> Member:
        return Member(
            name=self.name,
            addr=self.address[0],
            port=self.port,
            meta=self.meta,
            status=self.state,
            incarnation=self.incarnation,
            protocol_max=self.pmax,
            since=self.state_change,
        )


class _Phase(enum.Enum):
    DIRECT = 1
    INDIRECT = 2


@dataclass(slots=True)
class _Probe:
    target: str
    seq: int
    direct_deadline: float
    end: float
    phase: _Phase = _Phase.DIRECT
    expected_nacks: int = 0
    nacks: int = 0
    tcp_request: int | None = None
    tcp_ok: bool = False
    started: float = 0.0


@dataclass(slots=True)
class _Relay:
    """An indirect ping we are doing for someone: relay the ack, or send a nack at the deadline."""

    requester: Address
    seq_no: int
    nack: bool
    deadline: float


@dataclass(slots=True)
class _Exchange:
    kind: str  # "join", "push-pull" or "ping"
    deadline: float
    seq: int = 0


class Membership:
    """The membership of one node; see the module docstring for the rules.

    Args:
        name: This node's unique name.
        addr: The address other members reach us at (4 or 16 bytes).
        port: Our UDP and TCP port.
        meta: Our node meta (Serf tags), at most 512 bytes.
        now: The current time, in seconds on any monotonic scale.
        rng: The only source of randomness.
        timing: Protocol timing (``GossipTiming.lan()`` by default).
        keyring: Encrypt and authenticate everything with these keys.
        delegate: The layer above (user messages, push-pull user state).
        compress_streams: LZW-compress TCP streams, as Serf does.
    """

    def __init__(
        self,
        name: str,
        addr: bytes,
        port: int,
        *,
        now: float,
        rng: random.Random,
        meta: bytes = b"",
        timing: GossipTiming | None = None,
        keyring: Keyring | None = None,
        delegate: Delegate | None = None,
        compress_streams: bool = True,
    ) -> None:
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node meta is {len(meta)} bytes; at most {META_MAX_SIZE} fit")
        self.name = name
        self.timing = timing or GossipTiming.lan()
        self.keyring = keyring
        self.delegate: Delegate = delegate or NoDelegate()
        self.compress_streams = compress_streams
        self.rng = rng
        self.stats = Stats()
        self.awareness = Awareness(self.timing.awareness_max_multiplier)
        self._queue = BroadcastQueue(self.timing.retransmit_mult)
        self._nodes: dict[str, _Node] = {}
        self._order: list[str] = []  # probe order
        self._probe_index = 0
        self._seq = 0
        self._incarnation = 0
        self._suspicions: dict[str, Suspicion] = {}
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._exchanges: dict[int, _Exchange] = {}
        self._stream_id = 0
        self._out: list[tuple[Address, bytes]] = []
        self._streams: list[StreamRequest] = []
        self._events: list[MemberEvent] = []
        self._left = False
        self._leave_deadline: float | None = None
        self._join_seeds: list[Address] = []
        self._join_retry_at: float | None = None
        self._join_backoff = 1.0
        self.joined = False
        self._failed: dict[str, tuple[Address, float]] = {}  # name -> (address, failed at)
        timing_ = self.timing
        self._next_probe = now + rng.uniform(0, timing_.probe_interval)
        self._next_gossip = now + rng.uniform(0, timing_.gossip_interval)
        self._next_push_pull = now + rng.uniform(0, timing_.push_pull_interval)
        self._next_reconnect = now + timing_.reconnect_interval
        vsn = bytes([PROTOCOL_MIN, PROTOCOL_MAX, PROTOCOL_SPOKEN, 2, 5, 5])
        me = _Node(name, addr, port, meta, 0, NodeStatus.DEAD, now, vsn)
        self._nodes[name] = me
        self._order.append(name)
        self._alive_node(
            Alive(self._next_incarnation(), name, addr, port, meta, vsn), now, bootstrap=True
        )

    # --- outputs ---------------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[Address, bytes]]:
        """Packets to send, and to whom; emptied by the call."""
        out, self._out = self._out, []
        return out

    def streams_to_open(self) -> list[StreamRequest]:
        """TCP exchanges to start; emptied by the call."""
        out, self._streams = self._streams, []
        return out

    def events(self) -> list[MemberEvent]:
        """Membership changes since the last call."""
        out, self._events = self._events, []
        return out

    def members(self) -> list[Member]:
        """Every known member, ourselves included, by name."""
        return [self._nodes[n].snapshot() for n in sorted(self._nodes)]

    def member(self, name: str) -> Member | None:
        node = self._nodes.get(name)
        return None if node is None else node.snapshot()

    def random_alive_member(self) -> str | None:
        """The name of a random live member other than ourselves, if there is one."""
        peers = self._random_nodes(1, lambda n: n.name != self.name and n.state is NodeStatus.ALIVE)
        return peers[0].name if peers else None

    @property
    def self_meta(self) -> bytes:
        """Our own node meta (Serf tags)."""
        return self._nodes[self.name].meta

    @property
    def num_members(self) -> int:
        return len(self._nodes)

    @property
    def left(self) -> bool:
        """Whether a leave has been announced and has had its chance to spread."""
        return self._left and self._leave_deadline is None

    def next_deadline(self) -> float:
        """The latest time :meth:`tick` must be called at."""
        times = [self._next_gossip, self.delegate.next_deadline()]
        if not self._left:
            times += [self._next_probe, self._next_push_pull, self._next_reconnect]
        if self._probe is not None:
            times.append(
                self._probe.direct_deadline
                if self._probe.phase is _Phase.DIRECT
                else self._probe.end
            )
        times.extend(s.deadline for s in self._suspicions.values())
        times.extend(r.deadline for r in self._relays.values())
        times.extend(e.deadline for e in self._exchanges.values())
        if self._join_retry_at is not None:
            times.append(self._join_retry_at)
        if self._leave_deadline is not None:
            times.append(self._leave_deadline)
        return min(times)

    # --- commands --------------------------------------------------------------------------------

    def join(self, seeds: Sequence[Address], now: float) -> None:
        """Push-pull with every seed; any one that answers suffices. Retries while none does."""
        self._join_seeds = list(seeds)
        self._join_retry_at = None
        for seed in self._join_seeds:
            self._open_push_pull(seed, join=True, now=now)

    def leave(self, now: float, timeout: float = 5.0) -> None:
        """Announce that we leave (dead from ourselves); :attr:`left` turns true once it spread."""
        if self._left:
            return
        me = self._nodes[self.name]
        self._left = True
        self._dead_node(Dead(me.incarnation, self.name, self.name), now)
        others = any(
            n.state is NodeStatus.ALIVE for n in self._nodes.values() if n.name != self.name
        )
        self._leave_deadline = now + timeout if others else None

    def adopt(self, members: Sequence[PushNodeState], now: float) -> None:
        """Take ``members`` as known and alive without announcing them.

        For simulations that start from an already formed cluster: announcing every member to
        every other one would cost N² broadcasts before the experiment begins.
        """
        for m in members:
            if m.name in self._nodes:
                continue
            self._nodes[m.name] = _Node(
                m.name, m.addr, m.port, m.meta, m.incarnation, NodeStatus.ALIVE, now, m.vsn
            )
            self._order.append(m.name)
        self.rng.shuffle(self._order)
        # Spread the first push-pulls over the interval this cluster size calls for.
        interval = push_pull_scale(self.timing.push_pull_interval, len(self._nodes))
        self._next_push_pull = now + self.rng.uniform(0, interval)

    def update_meta(self, meta: bytes, now: float) -> None:
        """Change our meta (tags) and tell everyone."""
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node meta is {len(meta)} bytes; at most {META_MAX_SIZE} fit")
        me = self._nodes[self.name]
        alive = Alive(self._next_incarnation(), self.name, me.addr, me.port, meta, me.vsn)
        self._alive_node(alive, now, bootstrap=True)

    # --- inputs ----------------------------------------------------------------------------------

    def receive_packet(self, data: bytes, src: Address, now: float) -> None:
        """A UDP packet arrived from ``src``. Bad packets are counted and dropped."""
        self.stats.packets_received += 1
        try:
            messages = decode_packet(data, keyring=self.keyring)
        except PartialPacketError as exc:  # as memberlist: keep the parts that decoded
            self._count_error(f"packet: {exc}")
            messages = exc.messages
        except WireError as exc:
            self._count_error(f"packet: {exc}")
            return
        for msg in messages:
            self._handle(msg, src, now)

    def handle_stream(
        self, msg: PushPull | Ping | User | Ack | ErrorResponse, now: float
    ) -> bytes | None:
        """A message arrived on an incoming TCP stream; return the reply to write, if any."""
        if isinstance(msg, PushPull):
            self.stats.push_pulls += 1
            reply = self._encode_stream(self._local_state(msg.join))
            self._merge_state(msg, now)
            return reply
        if isinstance(msg, Ping):
            if msg.node and msg.node != self.name:
                self.stats.unexpected_pings += 1
                return None
            return self._encode_stream(Ack(msg.seq_no))
        if isinstance(msg, User):
            self.delegate.notify_user(msg.payload, now)
            self._send_replies(now)
        return None

    def stream_reply(
        self, request_id: int, reply: PushPull | Ack | ErrorResponse | None, now: float
    ) -> None:
        """The outcome of a :class:`StreamRequest` (``None``: it failed or timed out)."""
        exchange = self._exchanges.pop(request_id, None)
        if exchange is None:
            return
        if exchange.kind == "ping":
            ok = isinstance(reply, Ack) and reply.seq_no == exchange.seq
            probe = self._probe
            if ok and probe is not None and probe.tcp_request == request_id:
                probe.tcp_ok = True
            return
        if not isinstance(reply, PushPull):
            if exchange.kind == "join":
                self._join_failed(now)
            return
        self.stats.push_pulls += 1
        self._merge_state(reply, now)
        if exchange.kind == "join":
            self.joined = True
            self._join_retry_at = None
            self._join_backoff = 1.0

    def tick(self, now: float) -> None:
        """Run every timer that is due at ``now``."""
        self.delegate.tick(now)
        if self._leave_deadline is not None and (now >= self._leave_deadline or not self._queue):
            self._leave_deadline = None
        for request_id, exchange in list(self._exchanges.items()):
            if now >= exchange.deadline:
                self.stream_reply(request_id, None, now)
        for name, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline:
                self._suspicion_expired(name, suspicion, now)
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                if relay.nack:
                    self._send_to(relay.requester, encode_message(Nack(relay.seq_no)), None, now)
        probe = self._probe
        if probe is not None:
            if probe.phase is _Phase.DIRECT and now >= probe.direct_deadline:
                self._probe_indirect(probe, now)
            elif probe.phase is _Phase.INDIRECT and now >= probe.end:
                self._probe_failed(probe, now)
        if not self._left and now >= self._next_probe:
            self._start_probe(now)
        if now >= self._next_gossip:
            self._next_gossip = now + self.timing.gossip_interval
            self._gossip(now)
        if not self._left and now >= self._next_push_pull:
            interval = push_pull_scale(self.timing.push_pull_interval, len(self._nodes))
            self._next_push_pull = now + interval
            self._push_pull_random(now)
        if not self._left and now >= self._next_reconnect:
            self._next_reconnect = now + self.timing.reconnect_interval
            self._reconnect(now)
        if self._join_retry_at is not None and now >= self._join_retry_at:
            self.join(self._join_seeds, now)

    # --- message handling ------------------------------------------------------------------------

    def _handle(self, msg: Message, src: Address, now: float) -> None:
        if isinstance(msg, Ping):
            self._handle_ping(msg, src, now)
        elif isinstance(msg, IndirectPing):
            self._handle_indirect_ping(msg, src, now)
        elif isinstance(msg, Ack):
            self._handle_ack(msg, now)
        elif isinstance(msg, Nack):
            if self._probe is not None and self._probe.seq == msg.seq_no:
                self._probe.nacks += 1
        elif isinstance(msg, Alive):
            self._alive_node(msg, now)
        elif isinstance(msg, Suspect):
            self._suspect_node(msg, now)
        elif isinstance(msg, Dead):
            self._dead_node(msg, now)
        elif isinstance(msg, User):
            self.delegate.notify_user(msg.payload, now)
            self._send_replies(now)
        else:
            self._count_error(f"unexpected {type(msg).__name__} in a packet")

    def _send_replies(self, now: float) -> None:
        """Send the delegate's answers to queriers, each to a member we know at the address the
        query named (memberlist's ``SendToAddress``); one for anyone else is dropped, so that a
        query cannot aim every member's answers at a stranger."""
        for reply in self.delegate.replies():
            peer = self._nodes.get(reply.source_node)
            if (
                peer is None
                or peer.state is NodeStatus.DEAD
                or (peer.addr, peer.port) != (reply.addr, reply.port)
            ):
                self._count_error("a query reply for no member at the query's address")
                continue
            part = bytes([MessageType.USER]) + reply.payload
            self._send_parts(peer.address, [part], peer, now, piggyback=False)

    def _reply_address(self, addr: bytes, port: int, src: Address) -> Address:
        if addr and port:
            return str(ipaddress.ip_address(addr)), port
        return src

    def _handle_ping(self, ping: Ping, src: Address, now: float) -> None:
        if ping.node and ping.node != self.name:
            self.stats.unexpected_pings += 1
            return
        to = self._reply_address(ping.source_addr, ping.source_port, src)
        self._send_to(to, encode_message(Ack(ping.seq_no)), self._nodes.get(ping.source_node), now)

    def _handle_indirect_ping(self, ind: IndirectPing, src: Address, now: float) -> None:
        seq = self._next_seq()
        me = self._nodes[self.name]
        ping = Ping(seq, ind.node, me.addr, me.port, self.name)
        target = (str(ipaddress.ip_address(ind.target)), ind.port)
        requester = self._reply_address(ind.source_addr, ind.source_port, src)
        self._relays[seq] = _Relay(requester, ind.seq_no, ind.nack, now + self.timing.probe_timeout)
        self._send_to(target, encode_message(ping), self._nodes.get(ind.node), now)

    def _handle_ack(self, ack: Ack, now: float) -> None:
        probe = self._probe
        if probe is not None and probe.seq == ack.seq_no:
            self._probe = None
            self.awareness.apply(-1)
            self.stats.probed(now - probe.started)
            return
        relay = self._relays.pop(ack.seq_no, None)
        if relay is not None:
            self._send_to(relay.requester, encode_message(Ack(relay.seq_no)), None, now)

    def _alive_node(self, a: Alive, now: float, *, bootstrap: bool = False) -> None:
        if self._left and a.node == self.name and not bootstrap:
            return
        if len(a.vsn) >= 3 and (a.vsn[0] == 0 or a.vsn[1] == 0 or a.vsn[0] > a.vsn[1]):
            self._count_error(f"alive {a.node}: bad protocol versions {list(a.vsn)}")
            return
        node = self._nodes.get(a.node)
        updates_node = False
        if node is None:
            node = _Node(a.node, a.addr, a.port, a.meta, 0, NodeStatus.DEAD, now, a.vsn)
            self._nodes[a.node] = node
            # Insert at a random place so new members are probed in a random order.
            self._order.insert(self.rng.randint(0, len(self._order)), a.node)
        elif node.addr != a.addr or node.port != a.port:
            reclaim = self.timing.dead_node_reclaim_time
            can_reclaim = reclaim > 0 and now - node.state_change > reclaim
            if node.state is NodeStatus.LEFT or (node.state is NodeStatus.DEAD and can_reclaim):
                updates_node = True
            else:
                self._count_error(f"name conflict: {a.node} claimed from a second address")
                return
        is_local = a.node == self.name
        if a.incarnation <= node.incarnation and not is_local and not updates_node:
            return
        if a.incarnation < node.incarnation and is_local:
            return
        self._suspicions.pop(a.node, None)
        old_state, old_meta = node.state, node.meta
        if not bootstrap and is_local:
            if a.incarnation == node.incarnation and a.meta == node.meta and a.vsn == node.vsn:
                return
            self._refute(node, a.incarnation, now)
            return
        self._queue.put(encode_message(a), key=a.node)
        node.vsn = a.vsn or node.vsn
        node.incarnation = a.incarnation
        node.meta = a.meta
        node.addr, node.port = a.addr, a.port
        if node.state is not NodeStatus.ALIVE:
            node.state = NodeStatus.ALIVE
            node.state_change = now
        self._failed.pop(node.name, None)
        if old_state in (NodeStatus.DEAD, NodeStatus.LEFT):
            self._events.append(MemberEvent("join", node.snapshot()))
        elif old_meta != node.meta:
            self._events.append(MemberEvent("update", node.snapshot()))

    def _suspect_node(self, s: Suspect, now: float) -> None:
        node = self._nodes.get(s.node)
        if node is None or s.incarnation < node.incarnation:
            return
        suspicion = self._suspicions.get(s.node)
        if suspicion is not None:
            if suspicion.confirm(s.from_node):
                self._queue.put(encode_message(s), key=s.node)
            return
        if node.state is not NodeStatus.ALIVE:
            return
        if node.name == self.name:
            self._refute(node, s.incarnation, now)
            return
        self._queue.put(encode_message(s), key=s.node)
        self.stats.suspicions += 1
        node.incarnation = s.incarnation
        node.state = NodeStatus.SUSPECT
        node.state_change = now
        t = self.timing
        n = len(self._nodes)
        k = t.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        low = suspicion_timeout(t.suspicion_mult, n, t.probe_interval)
        high = t.suspicion_max_timeout_mult * low
        self._suspicions[s.node] = Suspicion(
            start=now,
            k=k,
            min=low,
            max=high,
            confirmations={s.from_node},
            deadline=now + (high if k >= 1 else low),
        )

    def _suspicion_expired(self, name: str, suspicion: Suspicion, now: float) -> None:
        del self._suspicions[name]
        node = self._nodes.get(name)
        if (
            node is not None
            and node.state is NodeStatus.SUSPECT
            and node.state_change == suspicion.start
        ):
            self.stats.deaths_declared += 1
            self._dead_node(Dead(node.incarnation, name, self.name), now)

    def _dead_node(self, d: Dead, now: float) -> None:
        node = self._nodes.get(d.node)
        if node is None or d.incarnation < node.incarnation:
            return
        self._suspicions.pop(d.node, None)
        if node.state in (NodeStatus.DEAD, NodeStatus.LEFT):
            return
        if node.name == self.name and not self._left:
            self._refute(node, d.incarnation, now)
            return
        self._queue.put(encode_message(d), key=d.node)
        node.incarnation = d.incarnation
        node.state = NodeStatus.LEFT if d.node == d.from_node else NodeStatus.DEAD
        node.state_change = now
        if node.state is NodeStatus.DEAD and node.name != self.name:
            self._failed[node.name] = (node.address, now)
        self._events.append(MemberEvent("leave", node.snapshot()))

    def _refute(self, me: _Node, accused: int, now: float) -> None:
        self.stats.refutations += 1
        inc = self._next_incarnation()
        if accused >= inc:
            inc = self._incarnation = accused + 1
        me.incarnation = inc
        self.awareness.apply(1)
        alive = Alive(inc, me.name, me.addr, me.port, me.meta, me.vsn)
        self._queue.put(encode_message(alive), key=me.name)

    def _merge_state(self, remote: PushPull, now: float) -> None:
        for r in remote.nodes:
            if r.state is NodeStatus.ALIVE:
                self._alive_node(Alive(r.incarnation, r.name, r.addr, r.port, r.meta, r.vsn), now)
            elif r.state is NodeStatus.LEFT:
                self._dead_node(Dead(r.incarnation, r.name, r.name), now)
            else:  # dead or suspect: we only suspect it, and probe for ourselves
                self._suspect_node(Suspect(r.incarnation, r.name, self.name), now)
        if remote.user_state:
            self.delegate.merge_remote_state(remote.user_state, remote.join, now)

    # --- probing ---------------------------------------------------------------------------------

    def _start_probe(self, now: float) -> None:
        interval = self.awareness.scale(self.timing.probe_interval)
        self._next_probe = now + max(interval, self.timing.probe_interval)
        target = self._next_probe_target(now)
        if target is None:
            return
        seq = self._next_seq()
        me = self._nodes[self.name]
        ping = encode_message(Ping(seq, target.name, me.addr, me.port, self.name))
        parts = [ping]
        if target.state is not NodeStatus.ALIVE:
            parts.append(encode_message(Suspect(target.incarnation, target.name, self.name)))
        self._send_parts(target.address, parts, target, now)
        self._probe = _Probe(
            target.name, seq, now + self.timing.probe_timeout, now + interval, started=now
        )

    def _next_probe_target(self, now: float) -> _Node | None:
        for _ in range(len(self._order) + 1):
            if self._probe_index >= len(self._order):
                self._reset_nodes(now)
                self._probe_index = 0
            if not self._order:
                return None
            node = self._nodes[self._order[self._probe_index]]
            self._probe_index += 1
            if node.name != self.name and node.state not in (NodeStatus.DEAD, NodeStatus.LEFT):
                return node
        return None

    def _random_nodes(self, k: int, accept: Callable[[_Node], bool]) -> list[_Node]:
        """Up to ``k`` distinct random members that ``accept`` takes.

        As memberlist's kRandomNodes: at most ``3 n`` random draws, so in the usual case the cost
        does not grow with the size of the cluster.
        """
        order = self._order
        picked: list[_Node] = []
        seen: set[str] = set()
        n = len(order)
        for _ in range(3 * n):
            if len(picked) >= k:
                break
            name = order[self.rng.randrange(n)]
            if name in seen:
                continue
            seen.add(name)
            node = self._nodes.get(name)
            if node is not None and accept(node):
                picked.append(node)
        return picked

    def _reset_nodes(self, now: float) -> None:
        """End of a probe round: reap members dead for long enough, and reshuffle."""
        cutoff = now - self.timing.gossip_to_the_dead_time
        for name in list(self._order):
            node = self._nodes[name]
            if (
                node.state in (NodeStatus.DEAD, NodeStatus.LEFT)
                and node.state_change < cutoff
                and name != self.name
            ):
                del self._nodes[name]
        self._order = list(self._nodes)
        self.rng.shuffle(self._order)

    def _probe_indirect(self, probe: _Probe, now: float) -> None:
        probe.phase = _Phase.INDIRECT
        target = self._nodes.get(probe.target)
        if target is None:
            self._probe = None
            return
        me = self._nodes[self.name]
        peers = self._random_nodes(
            self.timing.indirect_checks,
            lambda n: n.name not in (self.name, target.name) and n.state is NodeStatus.ALIVE,
        )
        for peer in peers:
            nack = peer.pmax >= 4
            probe.expected_nacks += nack
            ind = IndirectPing(
                probe.seq, target.addr, target.port, target.name, nack, me.addr, me.port, self.name
            )
            self._send_parts(peer.address, [encode_message(ind)], peer, now)
        if target.pmax >= 3 and not self.timing.disable_tcp_pings:
            ping = Ping(probe.seq, target.name, me.addr, me.port, self.name)
            rid = self._open_stream(target.address, self._encode_stream(ping), probe.end)
            self._exchanges[rid] = _Exchange("ping", probe.end, probe.seq)
            probe.tcp_request = rid

    def _probe_failed(self, probe: _Probe, now: float) -> None:
        self._probe = None
        if probe.tcp_ok:
            self.awareness.apply(-1)
            return
        if probe.expected_nacks > 0:
            self.awareness.apply(max(probe.expected_nacks - probe.nacks, 0))
        else:
            self.awareness.apply(1)
        target = self._nodes.get(probe.target)
        if target is not None:
            self._suspect_node(Suspect(target.incarnation, target.name, self.name), now)

    # --- gossip and push-pull --------------------------------------------------------------------

    def _gossip(self, now: float) -> None:
        dead_cutoff = now - self.timing.gossip_to_the_dead_time
        peers = self._random_nodes(
            self.timing.gossip_nodes,
            lambda n: (
                n.name != self.name
                and (
                    n.state in (NodeStatus.ALIVE, NodeStatus.SUSPECT)
                    or (n.state is NodeStatus.DEAD and n.state_change > dead_cutoff)
                )
            ),
        )
        for peer in peers:
            room = self._room(peer) - COMPOUND_HEADER_OVERHEAD
            parts = self._take_broadcasts(COMPOUND_OVERHEAD, room, peer)
            if not parts:
                return
            self._send_parts(peer.address, parts, peer, now, piggyback=False)

    def _push_pull_random(self, now: float) -> None:
        peers = self._random_nodes(1, lambda n: n.name != self.name and n.state is NodeStatus.ALIVE)
        if peers:
            self._open_push_pull(peers[0].address, join=False, now=now)

    def _reconnect(self, now: float) -> None:
        """Serf's reconnect: push-pull with one random failed member, dropping expired ones."""
        expired = now - self.timing.reconnect_timeout
        for name, (_, since) in list(self._failed.items()):
            if since < expired:
                del self._failed[name]
        if self._failed:
            name = self.rng.choice(sorted(self._failed))
            self._open_push_pull(self._failed[name][0], join=False, now=now)

    def _open_push_pull(self, addr: Address, *, join: bool, now: float) -> None:
        deadline = now + self.timing.tcp_timeout
        rid = self._open_stream(addr, self._encode_stream(self._local_state(join)), deadline)
        self._exchanges[rid] = _Exchange("join" if join else "push-pull", deadline)

    def _join_failed(self, now: float) -> None:
        if self.joined or any(e.kind == "join" for e in self._exchanges.values()):
            return
        self._join_retry_at = now + self._join_backoff * (1 + self.rng.random())
        self._join_backoff = min(self._join_backoff * 2, 60.0)

    def _local_state(self, join: bool) -> PushPull:
        nodes = tuple(
            PushNodeState(n.name, n.addr, n.port, n.meta, n.incarnation, n.state, n.vsn)
            for n in self._nodes.values()
        )
        return PushPull(nodes, self.delegate.local_state(join), join)

    # --- sending ---------------------------------------------------------------------------------

    def _room(self, peer: _Node | None) -> int:
        room = self.timing.udp_buffer_size
        if self.keyring is not None:
            room -= ENCRYPT_OVERHEAD
        if peer is not None and peer.pmax >= 5:
            room -= CRC_OVERHEAD
        return room

    def _take_broadcasts(self, overhead: int, limit: int, peer: _Node | None) -> list[bytes]:
        parts = self._queue.take(overhead, limit, len(self._nodes))
        used = sum(len(p) + overhead for p in parts)
        user = self.delegate.broadcasts(
            overhead + USER_MSG_OVERHEAD, limit - used, None if peer is None else peer.meta
        )
        parts.extend(bytes([MessageType.USER]) + u for u in user)
        return parts

    def _send_to(self, addr: Address, message: bytes, peer: _Node | None, now: float) -> None:
        self._send_parts(addr, [message], peer, now)

    def _send_parts(
        self,
        addr: Address,
        parts: list[bytes],
        peer: _Node | None,
        now: float,
        *,
        piggyback: bool = True,
    ) -> None:
        if piggyback:
            room = (
                self._room(peer)
                - sum(len(p) for p in parts)
                - COMPOUND_HEADER_OVERHEAD
                - COMPOUND_OVERHEAD * len(parts)
            )
            parts = parts + self._take_broadcasts(COMPOUND_OVERHEAD, room, peer)
        packet = encode_packet(
            parts[:255], keyring=self.keyring, crc=peer is not None and peer.pmax >= 5
        )
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(packet)
        self._out.append((addr, packet))

    def _open_stream(self, addr: Address, payload: bytes, deadline: float) -> int:
        self._stream_id += 1
        self._streams.append(StreamRequest(self._stream_id, addr, payload, deadline))
        return self._stream_id

    def _encode_stream(self, msg: PushPull | Ping | Ack) -> bytes:
        return encode_stream(msg, keyring=self.keyring, compress=self.compress_streams)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _next_incarnation(self) -> int:
        self._incarnation += 1
        return self._incarnation

    def _count_error(self, what: str) -> None:
        self.stats.bad_packets += 1
        key = what.split(":", 1)[0]
        self.stats.errors[key] = self.stats.errors.get(key, 0) + 1
