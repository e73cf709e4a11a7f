"""The store's codec: encoding and decoding of gossip deltas, frames and records.

Decoding validates whole messages (see :mod:`._store_messages` for their layout) and raises
:class:`StoreError` on anything a peer should not have sent.
"""

from __future__ import annotations

import struct
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgpack

from vxnet.gossip._errors import StoreError
from vxnet.gossip._hlc import HLC_MAX
from vxnet.gossip._store_digests import make_entry
from vxnet.gossip._store_messages import DELTA, DELTA_SLACK, FRAME_MAX, STORE_MAGIC
from vxnet.gossip._store_records import Record, Version, key_problem, name_problem

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vxnet.gossip._store_digests import Entry

__all__ = [
    "FRAME_HEADER",
    "check_key_and_writer",
    "decode_delta",
    "decode_frame",
    "decode_record",
    "delta_key",
    "describe",
    "encode_delta",
    "encode_frame",
    "encode_record",
    "encode_summary",
    "frame_length_from_header",
    "is_u64",
    "pack_array",
    "unpack",
]

FRAME_HEADER = struct.Struct(">BI")  # STORE_MAGIC, body length


def is_u64(value: object) -> bool:
    """Whether ``value`` is an int that fits 64 unsigned bits (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= HLC_MAX


def check_key_and_writer(key: object, writer: object, where: str) -> None:
    """Raises StoreError (``where: ...``) unless ``key`` is a record key and ``writer`` a node
    name."""
    problem = key_problem(key) or name_problem(writer)
    if problem is not None:
        raise StoreError(f"{where}: {problem}")


def describe(value: object) -> str:
    """A short description of a bad value, for an error message."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def unpack(data: bytes, what: str) -> Any:
    """msgpack-decode a peer's bytes; ``what`` names them in the error.

    Raises:
        StoreError: ``data`` is not valid msgpack.
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise StoreError(f"{what} is not valid msgpack: {exc}") from exc


def encode_record(entry: Entry) -> bytes:
    """A record as it travels: ``[key, value bytes or nil, hlc, writer]``."""
    version = entry.record.version
    packed: bytes = msgpack.packb(
        [entry.record.key, entry.blob, version.hlc, version.writer], use_bin_type=True
    )
    return packed


def encode_summary(entry: Entry) -> bytes:
    """A record's summary in a round-1 reply: ``[key, hlc, writer, hash]``."""
    version = entry.record.version
    packed: bytes = msgpack.packb([entry.record.key, version.hlc, version.writer, entry.digest])
    return packed


def encode_delta(entry: Entry) -> bytes:
    """The gossip delta that carries ``entry``."""
    return bytes([STORE_MAGIC]) + pack_array([msgpack.packb(DELTA), encode_record(entry)])


def pack_array(parts: list[bytes]) -> bytes:
    """A msgpack array of already-packed elements."""
    n = len(parts)
    if n <= 15:
        head = bytes([0x90 | n])
    elif n <= 0xFFFF:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(parts)


def encode_frame(parts: list[bytes]) -> bytes:
    """An anti-entropy frame whose body is the array of the packed ``parts``."""
    body = pack_array(parts)
    return FRAME_HEADER.pack(STORE_MAGIC, len(body)) + body


def frame_length_from_header(header: bytes) -> int:
    """A frame's whole length, from its first bytes.

    Raises:
        StoreError: Not a store frame, or over ``FRAME_MAX``.
        ValueError: Fewer bytes than the header given.
    """
    if len(header) < FRAME_HEADER.size:
        raise ValueError(f"need the first {FRAME_HEADER.size} bytes of a frame, got {len(header)}")
    magic, length = FRAME_HEADER.unpack_from(header)
    if magic != STORE_MAGIC:
        raise StoreError(f"not a store frame: first byte {magic:#04x}, want {STORE_MAGIC:#04x}")
    total: int = FRAME_HEADER.size + length
    if total > FRAME_MAX:
        raise StoreError(f"frame of {total} bytes is over the {FRAME_MAX}-byte cap")
    return total


def decode_frame(frame: bytes) -> list[Any]:
    """A whole frame's body: an array starting with its kind.

    Raises:
        StoreError: The frame is malformed or over the cap.
    """
    if len(frame) < FRAME_HEADER.size:
        raise StoreError(f"frame of {len(frame)} bytes is shorter than its header")
    total = frame_length_from_header(frame)
    if total != len(frame):
        raise StoreError(f"frame header says {total} bytes, got {len(frame)}")
    body = unpack(frame[FRAME_HEADER.size :], "frame body")
    if not isinstance(body, list) or not body or not isinstance(body[0], int):
        raise StoreError(
            f"frame body must be an array starting with its kind, got {describe(body)}"
        )
    return body


def delta_key(payload: bytes) -> str:
    """The key a delta writes, e.g. to let a newer delta replace an older one in a queue.

    Raises:
        StoreError: ``payload`` is not a store delta.
    """
    if not payload or payload[0] != STORE_MAGIC:
        raise StoreError("not a store message (wrong first byte)")
    body = unpack(payload[1:], "delta")
    if not (isinstance(body, list) and len(body) == 2 and body[0] == DELTA):
        raise StoreError(f"a delta is [1, record], got {describe(body)}")
    if not (isinstance(body[1], list) and body[1]):
        raise StoreError(f"a delta is [1, record], got {describe(body)}")
    key = body[1][0]
    problem = key_problem(key)
    if problem is not None:
        raise StoreError(f"delta: {problem}")
    assert isinstance(key, str)
    return key


def decode_delta(payload: bytes, max_record_bytes: int) -> Entry:
    """A gossip delta's record, validated.

    Raises:
        StoreError: ``payload`` is not a well-formed delta within ``max_record_bytes``.
    """
    if not payload or payload[0] != STORE_MAGIC:
        raise StoreError("not a store message (wrong first byte)")
    if len(payload) > max_record_bytes + DELTA_SLACK:
        raise StoreError(f"delta of {len(payload)} bytes is over the record size cap")
    body = unpack(payload[1:], "delta")
    if not isinstance(body, list) or len(body) != 2 or body[0] != DELTA:
        raise StoreError(f"a delta is [1, record], got {describe(body)}")
    return decode_record(body[1], "delta", max_record_bytes)


def decode_record(obj: object, where: str, max_record_bytes: int) -> Entry:
    """A record as it travels (``[key, value, hlc, writer]``), validated.

    ``where`` names the message, for the error.

    Raises:
        StoreError: ``obj`` is not a well-formed record within ``max_record_bytes``.
    """
    if not isinstance(obj, list) or len(obj) != 4:
        raise StoreError(f"{where}: a record is [key, value, hlc, writer], got {describe(obj)}")
    key, blob, hlc, writer = obj
    check_key_and_writer(key, writer, where)
    if not is_u64(hlc):
        raise StoreError(f"{where}: {key!r}: hlc must be a 64-bit unsigned int, not {hlc!r}")
    value: Mapping[str, Any] | None = None
    if blob is not None:
        if not isinstance(blob, bytes):
            raise StoreError(f"{where}: {key!r}: value must be bin or nil, not {describe(blob)}")
        if len(blob) > max_record_bytes:
            raise StoreError(
                f"{where}: {key!r}: value of {len(blob)} bytes is over "
                f"max_record_bytes={max_record_bytes}"
            )
        decoded = unpack(blob, f"{where}: {key!r}: value")
        if not isinstance(decoded, dict) or not all(isinstance(k, str) for k in decoded):
            raise StoreError(f"{where}: {key!r}: value must be a map with string keys")
        value = MappingProxyType(decoded)
    return make_entry(Record(key, value, Version(hlc, writer), writer), blob)
