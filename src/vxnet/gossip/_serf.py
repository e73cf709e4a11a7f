"""Serf's layer over memberlist: tags, Lamport clocks, member intents and push-pull state.

Serf 0.9 carries its own messages inside memberlist user messages (type 8) and push-pull user
state, and its node tags in memberlist's node ``Meta``. This module encodes and decodes those and
keeps the member-level state a Serf agent expects from a peer, so that a real ``serf agent`` lists
vxnet nodes as members with their tags. It is sans-IO: time is a parameter, nothing is sent.

Wire rules (serf ``messages.go``, go-msgpack ``MsgpackHandle``):

* A Serf message is one type byte (:class:`SerfMessageType`) and one msgpack map keyed by the Go
  field names, in name order (go-msgpack writes struct fields sorted), strings and byte strings
  as old-spec raw. Decoding ignores bytes after the map, unknown keys, and takes the zero value
  for missing keys and nil, as Go does. Empty byte strings and empty ``Filters`` encode as nil.
* Tags are ``0xFF`` and a msgpack map of strings, at most 512 bytes (memberlist ``MetaMaxSize``).
  Meta without the magic byte, empty meta included, is the pre-protocol-3 form: the whole meta is
  the ``role`` tag (so empty meta reads as ``{"role": ""}``, as ``serf members`` shows it).

Clock rules (Lamport): ``witness(v)`` moves the clock to ``v + 1`` when ``v`` is not older than it;
a new message carries the current time, then the clock moves on. All three clocks start at 1.

Intent rules, per member; ``t`` is the intent's time, ``s`` the member's status time. Every intent
first witnesses the member clock; an accepted intent sets ``s = t`` and is rebroadcast:

    ============  =====================  ==============  =====================================
    intent        member is              when            then
    ============  =====================  ==============  =====================================
    join / leave  not known              t > buffered t  buffer the intent (newest kept)
    join / leave  known                  t <= s          ignore
    join          leaving                t > s           accept, alive again
    join          alive, left, failed    t > s           accept, status unchanged
    leave         us, while not leaving  t > s           ignore; refute with a new join intent
    leave         alive                  t > s           accept, leaving
    leave         failed                 t > s           accept, left
    leave         leaving, left          t > s           accept, status unchanged
    ============  =====================  ==============  =====================================

Memberlist events: a node joining becomes alive (a buffered join sets ``s``; a buffered leave sets
``s`` and makes it leaving); a node leaving becomes left if it was leaving, else failed. A pruning
leave that is accepted erases the member. Buffered intents expire after ``recent_intent_timeout``,
left members after ``tombstone_timeout``, failed ones after ``reconnect_timeout``.

Push-pull merge: witness each clock at its value minus one; each ``LeftMembers`` name is a leave
intent at its ``StatusLTimes`` time plus one; every other ``StatusLTimes`` entry is a join intent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import msgpack

from ._errors import WireError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "META_MAX_SIZE",
    "QUERY_FLAG_ACK",
    "QUERY_FLAG_NO_BROADCAST",
    "TAG_MAGIC",
    "JoinIntent",
    "LamportClock",
    "LeaveIntent",
    "MemberStatus",
    "PushPullEvent",
    "PushPullEvents",
    "SerfError",
    "SerfMessage",
    "SerfMessageType",
    "SerfPushPull",
    "SerfQuery",
    "SerfQueryResponse",
    "SerfState",
    "SerfUserEvent",
    "UnhandledSerfMessage",
    "decode_serf",
    "decode_tags",
    "encode_serf",
    "encode_tags",
]

META_MAX_SIZE = 512  # memberlist MetaMaxSize
TAG_MAGIC = 0xFF  # first meta byte of a msgpack tag map (Serf protocol >= 3)
QUERY_FLAG_ACK = 1  # the querier wants an ack from every member that sees the query
QUERY_FLAG_NO_BROADCAST = 2  # members must not rebroadcast the query

_UINT64 = 1 << 64
_INT64 = 1 << 63


class SerfError(WireError):
    """A Serf message or tag blob from a peer could not be decoded (the peer's fault).

    A :class:`WireError`, so a driver can treat bad Serf and bad memberlist bytes alike; local
    mistakes (a number too big for its Go field, tags over the size limit) raise ValueError.
    """


class SerfMessageType(enum.IntEnum):
    """The first byte of a Serf message inside a memberlist user message."""

    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5
    CONFLICT_RESPONSE = 6
    KEY_REQUEST = 7
    KEY_RESPONSE = 8
    RELAY = 9


class MemberStatus(enum.StrEnum):
    """A member's status as Serf sees it."""

    ALIVE = "alive"
    LEAVING = "leaving"
    LEFT = "left"
    FAILED = "failed"


# --- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaveIntent:
    """``messageLeave``: ``node`` intends to leave (or is forced out) at Lamport time ``ltime``."""

    ltime: int
    node: str
    prune: bool = False


@dataclass(frozen=True, slots=True)
class JoinIntent:
    """``messageJoin``: ties ``node``'s join to Lamport time ``ltime``."""

    ltime: int
    node: str


@dataclass(frozen=True, slots=True)
class PushPullEvent:
    """``userEvent``: one recent user event in a push-pull."""

    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class PushPullEvents:
    """``userEvents``: the recent user events seen at one event Lamport time."""

    ltime: int
    events: tuple[PushPullEvent, ...]


@dataclass(frozen=True, slots=True)
class SerfPushPull:
    """``messagePushPull``: Serf's state exchange, the memberlist push-pull user state.

    ``events`` keeps Go's nil slots as ``None`` (Serf sends its whole 512-slot event ring).
    """

    ltime: int
    status_ltimes: Mapping[str, int]
    left_members: tuple[str, ...]
    event_ltime: int
    events: tuple[PushPullEvents | None, ...]
    query_ltime: int


@dataclass(frozen=True, slots=True)
class SerfUserEvent:
    """``messageUserEvent``: a user event; ``cc`` is "can coalesce"."""

    ltime: int
    name: str
    payload: bytes
    cc: bool


@dataclass(frozen=True, slots=True)
class SerfQuery:
    """``messageQuery``: a query; responses go to ``addr``:``port`` (``source_node``)."""

    ltime: int
    id: int
    addr: bytes
    port: int
    source_node: str
    filters: tuple[bytes, ...]
    flags: int
    relay_factor: int
    timeout_ns: int
    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SerfQueryResponse:
    """``messageQueryResponse``: an ack (``flags & QUERY_FLAG_ACK``) or a response to a query."""

    ltime: int
    id: int
    from_node: str
    flags: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class UnhandledSerfMessage:
    """A Serf message vxnet only tolerates (conflict/key responses, key requests, relays)."""

    type: SerfMessageType
    body: bytes  # everything after the type byte, undecoded


SerfMessage: TypeAlias = (
    LeaveIntent
    | JoinIntent
    | SerfPushPull
    | SerfUserEvent
    | SerfQuery
    | SerfQueryResponse
    | UnhandledSerfMessage
)


# --- codec: encoding --------------------------------------------------------------------------


def _text(value: str) -> bytes:
    # Go strings are bytes; surrogateescape keeps non-UTF-8 names from peers round-trippable.
    return value.encode("utf-8", "surrogateescape")


def _uint(value: int, bits: int, name: str) -> int:
    if isinstance(value, bool) or not 0 <= value < 1 << bits:
        raise ValueError(f"{name}={value!r} does not fit an unsigned {bits}-bit field")
    return value


def _raw_or_nil(value: bytes) -> bytes | None:
    return value if value else None


def _pack_map(fields: Mapping[str, Any]) -> dict[bytes, Any]:
    return {key.encode("ascii"): fields[key] for key in sorted(fields)}


def _body(msg: SerfMessage) -> Mapping[str, Any]:
    match msg:
        case LeaveIntent():
            return {
                "LTime": _uint(msg.ltime, 64, "LTime"),
                "Node": _text(msg.node),
                "Prune": msg.prune,
            }
        case JoinIntent():
            return {"LTime": _uint(msg.ltime, 64, "LTime"), "Node": _text(msg.node)}
        case SerfPushPull():
            return {
                "LTime": _uint(msg.ltime, 64, "LTime"),
                "StatusLTimes": {
                    _text(node): _uint(ltime, 64, "StatusLTimes")
                    for node, ltime in msg.status_ltimes.items()
                },
                "LeftMembers": [_text(node) for node in msg.left_members],
                "EventLTime": _uint(msg.event_ltime, 64, "EventLTime"),
                "Events": [
                    None
                    if slot is None
                    else _pack_map(
                        {
                            "LTime": _uint(slot.ltime, 64, "Events.LTime"),
                            "Events": [
                                _pack_map(
                                    {"Name": _text(e.name), "Payload": _raw_or_nil(e.payload)}
                                )
                                for e in slot.events
                            ],
                        }
                    )
                    for slot in msg.events
                ],
                "QueryLTime": _uint(msg.query_ltime, 64, "QueryLTime"),
            }
        case SerfUserEvent():
            return {
                "LTime": _uint(msg.ltime, 64, "LTime"),
                "Name": _text(msg.name),
                "Payload": _raw_or_nil(msg.payload),
                "CC": msg.cc,
            }
        case SerfQuery():
            if not -_INT64 <= msg.timeout_ns < _INT64:
                raise ValueError(f"Timeout={msg.timeout_ns!r} does not fit a Go time.Duration")
            return {
                "LTime": _uint(msg.ltime, 64, "LTime"),
                "ID": _uint(msg.id, 32, "ID"),
                "Addr": _raw_or_nil(msg.addr),
                "Port": _uint(msg.port, 16, "Port"),
                "SourceNode": _text(msg.source_node),
                "Filters": list(msg.filters) or None,
                "Flags": _uint(msg.flags, 32, "Flags"),
                "RelayFactor": _uint(msg.relay_factor, 8, "RelayFactor"),
                "Timeout": msg.timeout_ns,
                "Name": _text(msg.name),
                "Payload": _raw_or_nil(msg.payload),
            }
        case SerfQueryResponse():
            return {
                "LTime": _uint(msg.ltime, 64, "LTime"),
                "ID": _uint(msg.id, 32, "ID"),
                "From": _text(msg.from_node),
                "Flags": _uint(msg.flags, 32, "Flags"),
                "Payload": _raw_or_nil(msg.payload),
            }
        case _:  # pragma: no cover - UnhandledSerfMessage is handled by the caller
            raise TypeError(f"not a Serf message: {msg!r}")


_TYPES: dict[type, SerfMessageType] = {
    LeaveIntent: SerfMessageType.LEAVE,
    JoinIntent: SerfMessageType.JOIN,
    SerfPushPull: SerfMessageType.PUSH_PULL,
    SerfUserEvent: SerfMessageType.USER_EVENT,
    SerfQuery: SerfMessageType.QUERY,
    SerfQueryResponse: SerfMessageType.QUERY_RESPONSE,
}


def encode_serf(msg: SerfMessage) -> bytes:
    """Encode a Serf message as Serf's ``encodeMessage`` does: type byte, then msgpack.

    Raises:
        ValueError: A number does not fit its Go field.
    """
    if isinstance(msg, UnhandledSerfMessage):
        return bytes([msg.type]) + msg.body
    body: bytes = msgpack.packb(_pack_map(_body(msg)), use_bin_type=False)
    return bytes([_TYPES[type(msg)]]) + body


# --- codec: decoding --------------------------------------------------------------------------


def _unpack_one(data: bytes, what: str) -> Any:
    """Decode the first msgpack object of ``data`` and ignore the rest, as Go's decoder does."""
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=max(len(data), 1))
    try:
        unpacker.feed(data)
        return unpacker.unpack()
    # msgpack raises a zoo (OutOfData, FormatError, StackError, ValueError, TypeError, ...):
    # whatever it is, the bytes are the peer's fault.
    except Exception as exc:
        raise SerfError(f"{what}: bad msgpack: {exc!r}") from exc


class _Fields:
    """Typed access to a decoded msgpack map, with Go's zero values for missing keys and nil."""

    __slots__ = ("_map", "_what")

    def __init__(self, value: Any, what: str) -> None:
        if not isinstance(value, dict):
            raise SerfError(f"{what}: expected a map, got {type(value).__name__}")
        self._map: dict[Any, Any] = value
        self._what = what

    def _fail(self, key: str, value: Any, want: str) -> SerfError:
        return SerfError(f"{self._what}: field {key} is {type(value).__name__}, want {want}")

    def uint(self, key: str, bits: int = 64) -> int:
        return _decode_uint(self._map.get(key.encode()), bits, lambda v, w: self._fail(key, v, w))

    def int64(self, key: str) -> int:
        value = self._map.get(key.encode())
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or not -_INT64 <= value < _INT64:
            raise self._fail(key, value, "a signed 64-bit integer")
        return value

    def boolean(self, key: str) -> bool:
        value = self._map.get(key.encode())
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._fail(key, value, "a boolean")
        return value

    def text(self, key: str) -> str:
        return _decode_text(self._map.get(key.encode()), lambda v, w: self._fail(key, v, w))

    def raw(self, key: str) -> bytes:
        value = self._map.get(key.encode())
        if value is None:
            return b""
        if not isinstance(value, bytes):
            raise self._fail(key, value, "a byte string")
        return value

    def array(self, key: str) -> list[Any]:
        value = self._map.get(key.encode())
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._fail(key, value, "an array")
        return value

    def mapping(self, key: str) -> dict[Any, Any]:
        value = self._map.get(key.encode())
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._fail(key, value, "a map")
        return value


def _decode_uint(value: Any, bits: int, fail: Callable[[Any, str], SerfError]) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise fail(value, f"an unsigned {bits}-bit integer")
    return value


def _decode_text(value: Any, fail: Callable[[Any, str], SerfError]) -> str:
    if value is None:
        return ""
    if not isinstance(value, bytes):
        raise fail(value, "a string")
    return value.decode("utf-8", "surrogateescape")


def _decode_push_pull(f: _Fields) -> SerfPushPull:
    def fail(value: Any, want: str) -> SerfError:
        return SerfError(f"serf push-pull: {type(value).__name__} where {want} was expected")

    status = {
        _decode_text(node, fail): _decode_uint(ltime, 64, fail)
        for node, ltime in f.mapping("StatusLTimes").items()
    }
    left = tuple(_decode_text(node, fail) for node in f.array("LeftMembers"))
    slots: list[PushPullEvents | None] = []
    for slot in f.array("Events"):
        if slot is None:
            slots.append(None)
            continue
        sf = _Fields(slot, "serf push-pull event slot")
        events = []
        for event in sf.array("Events"):
            ef = _Fields(event, "serf push-pull event")
            events.append(PushPullEvent(ef.text("Name"), ef.raw("Payload")))
        slots.append(PushPullEvents(sf.uint("LTime"), tuple(events)))
    return SerfPushPull(
        ltime=f.uint("LTime"),
        status_ltimes=status,
        left_members=left,
        event_ltime=f.uint("EventLTime"),
        events=tuple(slots),
        query_ltime=f.uint("QueryLTime"),
    )


def _decode_query(f: _Fields) -> SerfQuery:
    filters = []
    for item in f.array("Filters"):
        if item is not None and not isinstance(item, bytes):
            raise SerfError(f"serf query: filter is {type(item).__name__}, want a byte string")
        filters.append(item or b"")
    return SerfQuery(
        ltime=f.uint("LTime"),
        id=f.uint("ID", 32),
        addr=f.raw("Addr"),
        port=f.uint("Port", 16),
        source_node=f.text("SourceNode"),
        filters=tuple(filters),
        flags=f.uint("Flags", 32),
        relay_factor=f.uint("RelayFactor", 8),
        timeout_ns=f.int64("Timeout"),
        name=f.text("Name"),
        payload=f.raw("Payload"),
    )


_DECODERS: dict[SerfMessageType, tuple[str, Callable[[_Fields], SerfMessage]]] = {
    SerfMessageType.LEAVE: (
        "serf leave intent",
        lambda f: LeaveIntent(f.uint("LTime"), f.text("Node"), f.boolean("Prune")),
    ),
    SerfMessageType.JOIN: (
        "serf join intent",
        lambda f: JoinIntent(f.uint("LTime"), f.text("Node")),
    ),
    SerfMessageType.PUSH_PULL: ("serf push-pull", _decode_push_pull),
    SerfMessageType.USER_EVENT: (
        "serf user event",
        lambda f: SerfUserEvent(f.uint("LTime"), f.text("Name"), f.raw("Payload"), f.boolean("CC")),
    ),
    SerfMessageType.QUERY: ("serf query", _decode_query),
    SerfMessageType.QUERY_RESPONSE: (
        "serf query response",
        lambda f: SerfQueryResponse(
            f.uint("LTime"), f.uint("ID", 32), f.text("From"), f.uint("Flags", 32), f.raw("Payload")
        ),
    ),
}


def decode_serf(data: bytes) -> SerfMessage:
    """Decode a Serf message (a memberlist user-message body or push-pull user state).

    Raises:
        SerfError: The bytes are empty, of an unknown type, or not a well-formed message.
    """
    if not data:
        raise SerfError("empty serf message")
    try:
        mtype = SerfMessageType(data[0])
    except ValueError:
        raise SerfError(f"unknown serf message type {data[0]}") from None
    if mtype not in _DECODERS:
        return UnhandledSerfMessage(mtype, bytes(data[1:]))
    what, decode = _DECODERS[mtype]
    return decode(_Fields(_unpack_one(bytes(data[1:]), what), what))


# --- tags -------------------------------------------------------------------------------------


def encode_tags(tags: Mapping[str, str]) -> bytes:
    """Encode node tags as Serf's node meta: the magic byte, then a msgpack map.

    Raises:
        ValueError: The encoding is over memberlist's 512-byte meta limit.
    """
    body: bytes = msgpack.packb(
        {_text(k): _text(tags[k]) for k in sorted(tags)}, use_bin_type=False
    )
    meta = bytes([TAG_MAGIC]) + body
    if len(meta) > META_MAX_SIZE:
        raise ValueError(
            f"tags encode to {len(meta)} bytes, over the {META_MAX_SIZE}-byte memberlist meta limit"
        )
    return meta


def decode_tags(meta: bytes) -> dict[str, str]:
    """Decode a member's node meta into its tags, as Serf's ``decodeTags`` does.

    Raises:
        SerfError: The meta has the tag magic byte but no map of strings after it.
    """
    if not meta or meta[0] != TAG_MAGIC:
        return {"role": bytes(meta).decode("utf-8", "surrogateescape")}
    value = _unpack_one(bytes(meta[1:]), "serf tags")
    if not isinstance(value, dict):
        raise SerfError(f"serf tags: expected a map, got {type(value).__name__}")

    def fail(item: Any, want: str) -> SerfError:
        return SerfError(f"serf tags: {type(item).__name__} where {want} was expected")

    return {_decode_text(k, fail): _decode_text(v, fail) for k, v in value.items()}


# --- clocks -----------------------------------------------------------------------------------


class LamportClock:
    """A Lamport clock, as Serf's ``LamportClock``."""

    __slots__ = ("_counter",)

    def __init__(self, start: int = 0) -> None:
        self._counter = start

    def __repr__(self) -> str:
        return f"LamportClock({self._counter})"

    def time(self) -> int:
        """Return the current time."""
        return self._counter

    def increment(self) -> int:
        """Move the clock on by one and return the new time."""
        self._counter += 1
        return self._counter

    def witness(self, v: int) -> None:
        """Account for time ``v`` seen from another process: the clock ends up past it."""
        if v >= self._counter:
            self._counter = v + 1


# --- member state -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Member:
    status: MemberStatus
    status_ltime: int = 0
    since: float = 0.0  # when it became left or failed


@dataclass(slots=True)
class _Intent:
    type: SerfMessageType  # JOIN or LEAVE
    ltime: int
    seen: float


class SerfState:
    """What a node needs to look like a Serf member: clocks, status times, intents.

    Feed it memberlist's events (:meth:`notify_join`, :meth:`notify_leave`), user messages
    (:meth:`receive`) and push-pull user states (:meth:`merge_remote_state`); broadcast what
    they return. The local node is a member from the start, as memberlist reports itself.
    The member, event and query clocks are the public ``clock``, ``event_clock`` and
    ``query_clock``.

    Args:
        node: This node's name.
        recent_intent_timeout: Seconds to keep an intent for a node memberlist has not reported
            (Serf ``RecentIntentTimeout``).
        tombstone_timeout: Seconds to remember a member that left (Serf ``TombstoneTimeout``).
        reconnect_timeout: Seconds to remember a member that failed (Serf ``ReconnectTimeout``).
    """

    __slots__ = (
        "_intents",
        "_leaving",
        "_members",
        "clock",
        "event_clock",
        "node",
        "query_clock",
        "recent_intent_timeout",
        "reconnect_timeout",
        "tombstone_timeout",
    )

    def __init__(
        self,
        node: str,
        *,
        recent_intent_timeout: float = 300.0,
        tombstone_timeout: float = 86400.0,
        reconnect_timeout: float = 86400.0,
    ) -> None:
        self.node = node
        self.recent_intent_timeout = recent_intent_timeout
        self.tombstone_timeout = tombstone_timeout
        self.reconnect_timeout = reconnect_timeout
        # Serf moves every clock to 1 when it starts, so its first messages carry time 1.
        self.clock = LamportClock(1)
        self.event_clock = LamportClock(1)
        self.query_clock = LamportClock(1)
        self._leaving = False  # we have sent our own leave intent
        self._members: dict[str, _Member] = {node: _Member(MemberStatus.ALIVE)}
        self._intents: dict[str, _Intent] = {}

    def __repr__(self) -> str:
        return f"SerfState({self.node!r}, clock={self.clock.time()}, members={len(self._members)})"

    # -- queries about the state

    def member_status(self, node: str) -> MemberStatus | None:
        """Return ``node``'s Serf-level status, or None if it is not a member."""
        member = self._members.get(node)
        return None if member is None else member.status

    def status_ltime(self, node: str) -> int | None:
        """Return the Lamport time of ``node``'s last accepted intent, or None if not a member."""
        member = self._members.get(node)
        return None if member is None else member.status_ltime

    def members(self) -> dict[str, MemberStatus]:
        """Return every member Serf would list, with its status."""
        return {name: m.status for name, m in self._members.items()}

    def next_deadline(self) -> float | None:
        """Return when :meth:`tick` next has something to expire, or None."""
        deadlines = [i.seen + self.recent_intent_timeout for i in self._intents.values()]
        for m in self._members.values():
            if m.status is MemberStatus.LEFT:
                deadlines.append(m.since + self.tombstone_timeout)
            elif m.status is MemberStatus.FAILED:
                deadlines.append(m.since + self.reconnect_timeout)
        return min(deadlines, default=None)

    # -- our own intents

    def join_intent(self, node: str, now: float) -> bytes:
        """Apply a join intent for ``node`` at the current time and return it to broadcast.

        For this node it also cancels a leave in progress: we mean to be alive.
        """
        msg = JoinIntent(self.clock.time(), node)
        self.clock.witness(msg.ltime)
        if node == self.node:
            self._leaving = False
        self._apply_join(msg, now)
        return encode_serf(msg)

    def leave_intent(self, node: str, now: float, *, prune: bool = False) -> bytes:
        """Apply a leave intent for ``node`` (ourselves, or a forced leave) and return it.

        After a leave intent for this node, leave intents for it are no longer refuted.
        """
        msg = LeaveIntent(self.clock.time(), node, prune)
        self.clock.increment()
        if node == self.node:
            self._leaving = True
        self._apply_leave(msg, now)
        return encode_serf(msg)

    # -- from the network

    def receive(self, payload: bytes, now: float) -> list[bytes]:
        """Handle the body of a memberlist user message.

        Returns:
            Serf messages to broadcast: the payload itself if Serf would rebroadcast it, or a
            join intent refuting a leave intent about this node.

        Raises:
            SerfError: The payload is not a well-formed Serf message.
        """
        if not payload:
            return []
        msg = decode_serf(payload)
        match msg:
            case LeaveIntent():
                refuted = self._refutes(msg)
                if self._apply_leave(msg, now):
                    return [bytes(payload)]
                return [self.join_intent(self.node, now)] if refuted else []
            case JoinIntent():
                return [bytes(payload)] if self._apply_join(msg, now) else []
            case SerfUserEvent():
                self.event_clock.witness(msg.ltime)
            case SerfQuery():
                self.query_clock.witness(msg.ltime)
            case _:
                pass  # responses and relays are for others; push-pull is not a user message
        return []

    def local_state(self, join: bool) -> bytes:
        """Return the push-pull user state to send (``join`` is accepted and ignored, as Serf)."""
        del join
        state = SerfPushPull(
            ltime=self.clock.time(),
            status_ltimes={name: m.status_ltime for name, m in self._members.items()},
            left_members=tuple(
                name for name, m in self._members.items() if m.status is MemberStatus.LEFT
            ),
            event_ltime=self.event_clock.time(),
            events=(),
            query_ltime=self.query_clock.time(),
        )
        return encode_serf(state)

    def merge_remote_state(self, data: bytes, now: float) -> list[bytes]:
        """Merge a peer's push-pull user state.

        Returns:
            A join intent to broadcast if the state says this node left while it is alive.

        Raises:
            SerfError: The state is empty, not a push-pull, or malformed.
        """
        if not data or data[0] != SerfMessageType.PUSH_PULL:
            raise SerfError(f"serf push-pull state has bad type prefix {data[:1].hex() or 'none'}")
        state = decode_serf(data)
        assert isinstance(state, SerfPushPull)
        # Nothing has been sent yet at the peer's current times, hence minus one.
        if state.ltime > 0:
            self.clock.witness(state.ltime - 1)
        if state.event_ltime > 0:
            self.event_clock.witness(state.event_ltime - 1)
        if state.query_ltime > 0:
            self.query_clock.witness(state.query_ltime - 1)
        refute = False
        left = set(state.left_members)
        for name in state.left_members:
            leave = LeaveIntent(state.status_ltimes.get(name, 0) + 1, name)
            refute |= self._refutes(leave)
            self._apply_leave(leave, now)
        for name, ltime in state.status_ltimes.items():
            if name not in left:
                self._apply_join(JoinIntent(ltime, name), now)
        for slot in state.events:
            if slot is not None and slot.events:
                self.event_clock.witness(slot.ltime)
        return [self.join_intent(self.node, now)] if refute else []

    # -- from memberlist

    def notify_join(self, node: str) -> None:
        """Memberlist reports ``node`` alive (NotifyJoin)."""
        member = self._members.get(node)
        if member is not None:
            member.status = MemberStatus.ALIVE
            member.since = 0.0
            return
        member = _Member(MemberStatus.ALIVE)
        intent = self._intents.get(node)
        if intent is not None:
            member.status_ltime = intent.ltime
            if intent.type is SerfMessageType.LEAVE:
                member.status = MemberStatus.LEAVING
        self._members[node] = member

    def notify_leave(self, node: str, now: float) -> None:
        """Memberlist reports ``node`` dead or gone (NotifyLeave)."""
        member = self._members.get(node)
        if member is None:
            return
        if member.status is MemberStatus.LEAVING:
            member.status = MemberStatus.LEFT
        elif member.status is MemberStatus.ALIVE:
            member.status = MemberStatus.FAILED
        else:
            return
        member.since = now

    def tick(self, now: float) -> None:
        """Expire old buffered intents, left members and failed members."""
        for name, intent in list(self._intents.items()):
            if now - intent.seen > self.recent_intent_timeout:
                del self._intents[name]
        for name, m in list(self._members.items()):
            if (m.status is MemberStatus.LEFT and now - m.since > self.tombstone_timeout) or (
                m.status is MemberStatus.FAILED and now - m.since > self.reconnect_timeout
            ):
                del self._members[name]

    # -- the intent rules (see the table at the top)

    def _refutes(self, msg: LeaveIntent) -> bool:
        member = self._members.get(msg.node)
        return (
            msg.node == self.node
            and not self._leaving
            and member is not None
            and msg.ltime > member.status_ltime
        )

    def _buffer(self, node: str, kind: SerfMessageType, ltime: int, now: float) -> bool:
        intent = self._intents.get(node)
        if intent is not None and ltime <= intent.ltime:
            return False
        self._intents[node] = _Intent(kind, ltime, now)
        return True

    def _apply_join(self, msg: JoinIntent, now: float) -> bool:
        self.clock.witness(msg.ltime)
        member = self._members.get(msg.node)
        if member is None:
            return self._buffer(msg.node, SerfMessageType.JOIN, msg.ltime, now)
        if msg.ltime <= member.status_ltime:
            return False
        member.status_ltime = msg.ltime
        if member.status is MemberStatus.LEAVING:
            member.status = MemberStatus.ALIVE
        return True

    def _apply_leave(self, msg: LeaveIntent, now: float) -> bool:
        self.clock.witness(msg.ltime)
        member = self._members.get(msg.node)
        if member is None:
            return self._buffer(msg.node, SerfMessageType.LEAVE, msg.ltime, now)
        if msg.ltime <= member.status_ltime or self._refutes(msg):
            return False
        member.status_ltime = msg.ltime
        if member.status is MemberStatus.ALIVE:
            member.status = MemberStatus.LEAVING
        elif member.status is MemberStatus.FAILED:
            member.status = MemberStatus.LEFT  # keeps its failure time for the tombstone
        if msg.prune:
            del self._members[msg.node]
        return True
