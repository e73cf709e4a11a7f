"""Serf's codec: its messages in memberlist user messages, and its tags in node meta.

Wire rules (serf ``messages.go``, go-msgpack ``MsgpackHandle``):

* A Serf message is one type byte (:class:`SerfMessageType`) and one msgpack map keyed by the Go
  field names, in name order (go-msgpack writes struct fields sorted), strings and byte strings
  as old-spec raw. Decoding ignores bytes after the map, unknown keys, and takes the zero value
  for missing keys and nil, as Go does. Empty byte strings and empty ``Filters`` encode as nil.
* Tags are ``0xFF`` and a msgpack map of strings, at most 512 bytes (memberlist ``MetaMaxSize``).
  Meta without the magic byte, empty meta included, is the pre-protocol-3 form: the whole meta is
  the ``role`` tag (so empty meta reads as ``{"role": ""}``, as ``serf members`` shows it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from vxnet.gossip._serf_messages import (
    JoinIntent,
    LeaveIntent,
    PushPullEvent,
    PushPullEvents,
    SerfError,
    SerfMessage,
    SerfMessageType,
    SerfPushPull,
    SerfQuery,
    SerfQueryResponse,
    SerfUserEvent,
    UnhandledSerfMessage,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["META_MAX_SIZE", "TAG_MAGIC", "decode_serf", "decode_tags", "encode_serf", "encode_tags"]

META_MAX_SIZE = 512  # memberlist MetaMaxSize
TAG_MAGIC = 0xFF  # first meta byte of a msgpack tag map (Serf protocol >= 3)

_INT64 = 1 << 63


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
