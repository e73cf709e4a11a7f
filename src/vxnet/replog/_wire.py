"""The replicated log's wire format: length-prefixed msgpack frames over TCP.

A frame is a 4-byte big-endian body length and a msgpack body of at most :data:`MAX_FRAME` bytes.
The first frame on a connection is a hello saying who is calling:

* ``["vxlog", 1, "peer", n, replica]``: replica ``replica`` of a log of ``n`` replicas; every
  later frame is one Paxos message (:func:`encode_message`), peer to peer, one way (each replica
  sends on the connection it opened and receives on the ones it accepted).
* ``["vxlog", 1, "client"]``: a client; later frames are requests (maps with ``op`` and ``id``)
  and the answers to them (maps with the same ``id``), see :mod:`vxnet.replog._client`.

A Paxos message is a msgpack array whose first element is its type code; entries are arrays too.
Everything decoded is checked (types, ranges, lengths): a frame that does not fit raises
:class:`WireError` naming what was wrong, and the connection is dropped.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import msgpack

from vxnet.replog._core import (
    MAX_REPLICAS,
    Accept,
    Accepted,
    Fetch,
    Heartbeat,
    Learned,
    Message,
    Prepare,
    Promise,
    RecoverRequest,
    RecoverResponse,
    Reject,
    message_problem,
)
from vxnet.replog._storage import Entry, ReplicaStatus, Snapshot

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "MAX_FRAME",
    "FrameReader",
    "Hello",
    "WireError",
    "client_hello",
    "decode_hello",
    "decode_map",
    "decode_message",
    "encode_frame",
    "encode_message",
    "peer_hello",
]

MAX_FRAME = 64 * 1024 * 1024  # a snapshot travels in one frame
MAGIC = "vxlog"
VERSION = 1
_LENGTH = struct.Struct(">I")
_INT64 = (-(2**63), 2**63 - 1)

_PREPARE, _PROMISE, _ACCEPT, _ACCEPTED, _HEARTBEAT = 1, 2, 3, 4, 5
_REJECT, _FETCH, _LEARNED, _RECOVER_REQUEST, _RECOVER_RESPONSE = 6, 7, 8, 9, 10


class WireError(ValueError):
    """A frame that is not what the protocol allows; the text says what was wrong."""


def encode_frame(body: object) -> bytes:
    """One frame: the length, then ``body`` as msgpack."""
    data: bytes = msgpack.packb(body, use_bin_type=True)
    if len(data) > MAX_FRAME:
        raise WireError(f"frame of {len(data)} bytes exceeds the limit of {MAX_FRAME}")
    return _LENGTH.pack(len(data)) + data


class FrameReader:
    """Splits a byte stream into frame bodies (decoded msgpack objects)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray) -> Iterator[object]:
        """Add received bytes; yield every whole frame's decoded body.

        Raises:
            WireError: A frame announces more than :data:`MAX_FRAME` bytes or is not msgpack.
        """
        self._buf += data
        while len(self._buf) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buf)
            if size > MAX_FRAME:
                raise WireError(f"frame announces {size} bytes; the limit is {MAX_FRAME}")
            end = _LENGTH.size + size
            if len(self._buf) < end:
                return
            body = bytes(self._buf[_LENGTH.size : end])
            del self._buf[:end]
            try:
                yield msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
            except (ValueError, msgpack.UnpackException) as exc:
                raise WireError(f"frame body is not msgpack: {exc}") from exc

    @property
    def buffered(self) -> int:
        """Bytes received that do not make a whole frame yet."""
        return len(self._buf)


# --- hello --------------------------------------------------------------------------------------


def peer_hello(n: int, replica: int) -> list[object]:
    return [MAGIC, VERSION, "peer", n, replica]


def client_hello() -> list[object]:
    return [MAGIC, VERSION, "client"]


class Hello:
    """A decoded hello: ``kind`` is ``"peer"`` (with ``n`` and ``replica``) or ``"client"``."""

    __slots__ = ("kind", "n", "replica")

    def __init__(self, kind: str, n: int = 0, replica: int = 0) -> None:
        self.kind = kind
        self.n = n
        self.replica = replica


def decode_hello(body: object) -> Hello:
    if not isinstance(body, list) or len(body) < 3 or body[0] != MAGIC:
        raise WireError("not a vxnet replicated-log connection (bad hello)")
    if body[1] != VERSION:
        raise WireError(f"protocol version {body[1]!r}; this replica speaks {VERSION}")
    if body[2] == "client" and len(body) == 3:
        return Hello("client")
    if body[2] == "peer" and len(body) == 5:
        n, replica = body[3], body[4]
        if not _is_int(n) or not 1 <= n <= MAX_REPLICAS:
            raise WireError(f"hello: replica count {n!r} is not 1..{MAX_REPLICAS}")
        if not _is_int(replica) or not 0 <= replica < n:
            raise WireError(f"hello: replica number {replica!r} is not 0..{n - 1}")
        return Hello("peer", n, replica)
    raise WireError(f"hello: unknown kind {body[2]!r} or wrong length {len(body)}")


# --- Paxos messages ---------------------------------------------------------------------------


def encode_message(msg: Message) -> list[object]:
    """A Paxos message as a msgpack-ready array."""
    if isinstance(msg, Accept):
        return [_ACCEPT, msg.ballot, [[p, v] for p, v in msg.entries], msg.commit]
    if isinstance(msg, Accepted):
        return [_ACCEPTED, msg.ballot, list(msg.positions)]
    if isinstance(msg, Heartbeat):
        return [_HEARTBEAT, msg.ballot, msg.commit, msg.end]
    if isinstance(msg, Prepare):
        return [_PREPARE, msg.ballot, msg.from_pos]
    if isinstance(msg, Promise):
        entries = [[e.position, e.ballot, e.value, e.chosen] for e in msg.accepted]
        return [_PROMISE, msg.ballot, entries, msg.end]
    if isinstance(msg, Reject):
        return [_REJECT, msg.ballot, msg.promised]
    if isinstance(msg, Fetch):
        return [_FETCH, msg.from_pos, msg.to_pos]
    if isinstance(msg, Learned):
        snap = None if msg.snapshot is None else [msg.snapshot.position, msg.snapshot.data]
        return [_LEARNED, [[p, v] for p, v in msg.entries], snap, msg.commit]
    if isinstance(msg, RecoverRequest):
        return [_RECOVER_REQUEST]
    return [_RECOVER_RESPONSE, int(msg.status), msg.promised, msg.end, msg.commit]


_ARITY = {
    _PREPARE: 3,
    _PROMISE: 4,
    _ACCEPT: 4,
    _ACCEPTED: 3,
    _HEARTBEAT: 4,
    _REJECT: 3,
    _FETCH: 3,
    _LEARNED: 4,
    _RECOVER_REQUEST: 1,
    _RECOVER_RESPONSE: 5,
}
_NAMES = {
    _PREPARE: "prepare",
    _PROMISE: "promise",
    _ACCEPT: "accept",
    _ACCEPTED: "accepted",
    _HEARTBEAT: "heartbeat",
    _REJECT: "reject",
    _FETCH: "fetch",
    _LEARNED: "learned",
    _RECOVER_REQUEST: "recover request",
    _RECOVER_RESPONSE: "recover response",
}


def decode_message(body: object) -> Message:
    """A Paxos message from a frame body, its values in range (:func:`message_problem`).

    Raises:
        WireError: The body is not a well-formed message; the text names the field.
    """
    msg = _decode_message(body)
    problem = message_problem(msg)
    if problem is not None:
        raise WireError(f"{_NAMES[body[0]]}: {problem}")  # type: ignore[index]
    return msg


def _decode_message(body: object) -> Message:
    if not isinstance(body, list) or not body:
        raise WireError("message: not a non-empty array")
    code = body[0]
    if not _is_int(code) or code not in _ARITY:
        raise WireError(f"message: unknown type {code!r}")
    name = _NAMES[code]
    if len(body) != _ARITY[code]:
        raise WireError(f"{name}: {len(body)} fields, expected {_ARITY[code]}")
    f = body
    if code == _ACCEPT:
        return Accept(_pos(name, "ballot", f[1]), _pairs(name, f[2]), _pos(name, "commit", f[3]))
    if code == _ACCEPTED:
        positions = _array(name, "positions", f[2])
        return Accepted(
            _pos(name, "ballot", f[1]), tuple(_pos(name, "position", p) for p in positions)
        )
    if code == _HEARTBEAT:
        return Heartbeat(
            _pos(name, "ballot", f[1]), _pos(name, "commit", f[2]), _pos(name, "end", f[3])
        )
    if code == _PREPARE:
        return Prepare(_pos(name, "ballot", f[1]), _pos(name, "from", f[2]))
    if code == _PROMISE:
        return Promise(
            _pos(name, "ballot", f[1]),
            tuple(_entry(name, e) for e in _array(name, "entries", f[2])),
            _pos(name, "end", f[3]),
        )
    if code == _REJECT:
        return Reject(_pos(name, "ballot", f[1]), _pos(name, "promised", f[2]))
    if code == _FETCH:
        return Fetch(_pos(name, "from", f[1]), _pos(name, "to", f[2]))
    if code == _LEARNED:
        snap = f[2]
        snapshot = None
        if snap is not None:
            if not isinstance(snap, list) or len(snap) != 2 or not isinstance(snap[1], bytes):
                raise WireError(f"{name}: snapshot is not [position, bytes]")
            snapshot = Snapshot(_pos(name, "snapshot position", snap[0]), snap[1])
        return Learned(_pairs(name, f[1]), snapshot, _pos(name, "commit", f[3]))
    if code == _RECOVER_REQUEST:
        return RecoverRequest()
    status = f[1]
    if not _is_int(status) or status not in {s.value for s in ReplicaStatus}:
        raise WireError(f"{name}: unknown replica status {status!r}")
    return RecoverResponse(
        ReplicaStatus(status),
        _pos(name, "promised", f[2]),
        _pos(name, "end", f[3]),
        _pos(name, "commit", f[4]),
    )


# --- client requests --------------------------------------------------------------------------


def decode_map(body: object, what: str) -> dict[str, Any]:
    """A client request or answer: a map with string keys and an integer ``id``."""
    if not isinstance(body, dict):
        raise WireError(f"{what}: not a map")
    if not _is_int(body.get("id")):
        raise WireError(f"{what}: no integer id")
    return body


# --- helpers ----------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return type(value) is int


def _pos(msg: str, field: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= _INT64[1]:
        raise WireError(f"{msg}: {field} {value!r} is not a non-negative 64-bit integer")
    return value


def _array(msg: str, field: str, value: object) -> list[object]:
    if not isinstance(value, list):
        raise WireError(f"{msg}: {field} is not an array")
    return value


def _pairs(msg: str, value: object) -> tuple[tuple[int, bytes], ...]:
    out = []
    for item in _array(msg, "entries", value):
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], bytes):
            raise WireError(f"{msg}: an entry is not [position, bytes]")
        out.append((_pos(msg, "position", item[0]), item[1]))
    return tuple(out)


def _entry(msg: str, item: object) -> Entry:
    if (
        not isinstance(item, list)
        or len(item) != 4
        or not isinstance(item[2], bytes)
        or not isinstance(item[3], bool)
    ):
        raise WireError(f"{msg}: an entry is not [position, ballot, bytes, chosen]")
    return Entry(_pos(msg, "position", item[0]), _pos(msg, "ballot", item[1]), item[2], item[3])
