"""A replicated key/value store (a Lashup-like CRDT): the sans-IO core every vxnet node holds.

Every node holds a full copy. Local writes become deltas that the gossip layer piggybacks as user
messages; anti-entropy exchanges over TCP repair whatever gossip missed. The core is fed bytes and
the wall time (seconds since the epoch) and says what to send; it has no sockets, no clocks and
no randomness. Its rules:

Records and merge:
  * Keys are 1 to 255 printable ASCII characters without spaces, in non-empty ``/``-separated
    segments, none of them ``..``; values are msgpack maps with string keys (any map inside
    has str or bin keys), at most ``max_record_bytes`` encoded.
  * A record is ``(key, value, version, owner)``; a value of ``None`` is a tombstone (a delete).
    A version is ``(hlc, writer)``, ordered by hybrid logical clock, then writer name.
  * The owner of a record is the writer of its current version: writing (or deleting) another
    node's key takes the key over, together with the duty to refresh it.
  * Merge is last-writer-wins per key by rank ``(hlc, writer, record hash)``. The hash only
    breaks ties between different records with equal versions (a writer whose clock went back),
    so that merge is commutative, associative and idempotent in every case.
  * The clock observes every timestamp merged and every local write is stamped ``clock.now``, so
    a local write always beats what the store holds.

Expiry (no resurrection):
  * A record is *expired* when its hlc's physical part plus ``tombstone_ttl`` is at or before the
    store's now, the highest wall time it has been given (so a clock stepping back changes
    nothing). All comparisons are in whole milliseconds.
  * A tombstone is kept until it expires; :meth:`Store.tick` then collects it.
  * The store re-stamps its own live records every ``refresh_interval`` (< ``tombstone_ttl``) and
    broadcasts them again. "Own" means written by this :class:`Store` instance: records of an
    earlier life of this node are not re-asserted, they expire like anyone else's.
  * Any other live record that expires is dropped by :meth:`Store.tick` (its owner is gone);
    an expired record is ignored on receipt (counted in ``records_stale``, not an error: a
    peer's tick may simply be late) and never sent in a sync.
  * Hence no resurrection: a tombstone outranks the copies it deleted, so they expire no later
    than it does; a copy that missed a delete and its collection is ignored everywhere. Only a
    write newer than the delete (a put, or the refresh of an owner that had not yet seen the
    delete: a concurrent write) can make the key live again.

Owner liveness (local, not replicated): :meth:`Store.owner_down` marks an owner down at a wall
time; :meth:`Store.live_items` hides its records once it has been down ``owner_grace`` seconds;
:meth:`Store.owner_up` shows them again.

Gossip deltas: ``STORE_MAGIC`` then msgpack ``[1, [key, value, hlc, writer]]`` where value is the
msgpack encoding of the value map as a bin (it travels and is hashed as the writer encoded it) or
nil for a tombstone. A receiver returns the deltas that changed its store, for infection-style
re-broadcast; a delta that changed nothing is not spread further.

Anti-entropy, two request/response rounds; each message is one frame, ``STORE_MAGIC``, a u32
big-endian body length and a msgpack array body, at most ``FRAME_MAX`` bytes in all:
  1. initiator -> ``[1, b, digests]``: the XOR of a 64-bit record hash over each of ``2**b``
     buckets (by key hash; kept incrementally in 65,536 leaves), ``b`` chosen from the
     initiator's size; responder -> ``[2, b, buckets, summaries]``: the mismatching buckets and
     ``[key, hlc, writer, hash]`` of its records in them (whole buckets only, up to the cap);
  2. initiator -> ``[3, records, wanted]``: its records the responder lacks or holds older, and
     the keys it wants; responder merges, then -> ``[4, records]``: the wanted records.
  The initiator keeps no state between rounds (``b`` comes back in the round-1 reply). Anything
  that did not fit under the cap is left for the next exchange.

Bad input: every message is decoded and validated whole before anything is merged; bytes that
are malformed, oversized, of the wrong type, with keys that break the key rules or a timestamp
more than ``max_drift`` ahead of the wall raise :class:`StoreError` (counted) and leave the store
as it was. Local misuse (a bad key or value in :meth:`Store.put`) raises :class:`ValueError`.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import msgpack

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "FRAME_MAX",
    "MAX_DRIFT",
    "STORE_MAGIC",
    "Change",
    "HybridClock",
    "Record",
    "Store",
    "StoreError",
    "StoreStats",
    "Version",
    "delta_key",
]

STORE_MAGIC: Final = 0x56
FRAME_MAX: Final = 16 * 1024 * 1024  # a whole frame, header included
MAX_DRIFT: Final = 60.0  # seconds a remote timestamp may be ahead of our wall time

LOGICAL_BITS: Final = 16
HLC_MAX: Final = (1 << 64) - 1
PHYSICAL_MAX: Final = (1 << 48) - 1
LEAF_BITS: Final = 16
MAX_BUCKET_BITS: Final = 16
MIN_BUCKET_BITS: Final = 4
NAME_MAX: Final = 255

_HEADER = struct.Struct(">BI")
_DELTA: Final = 1
_SYNC_DIGESTS: Final = 1
_SYNC_SUMMARIES: Final = 2
_SYNC_PUSH: Final = 3
_SYNC_RECORDS: Final = 4
_FRAME_ROOM: Final = FRAME_MAX - _HEADER.size - 64  # what lists in a body may fill
_DELTA_SLACK: Final = 2048  # a delta's bytes beyond its value: key, writer, hlc, framing
_KEY_CHARS = re.compile(r"[\x21-\x7e]{1,255}")


class StoreError(Exception):
    """Bytes from a peer could not be accepted; the message says what was wrong.

    This is always the remote side's fault (or the network's): local misuse, such as writing a
    key that breaks the key rules, raises :class:`ValueError` instead.
    """


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """When and by whom a record was written; versions order by ``hlc``, then ``writer``."""

    hlc: int  # (physical milliseconds << 16) | logical counter
    writer: str


@dataclass(frozen=True, slots=True)
class Record:
    """One key's record. ``value`` is ``None`` for a tombstone; ``owner`` is the writer."""

    key: str
    value: Mapping[str, Any] | None
    version: Version
    owner: str

    @property
    def is_tombstone(self) -> bool:
        """Whether the record is a delete."""
        return self.value is None


@dataclass(frozen=True, slots=True)
class Change:
    """The record for ``key`` changed from ``old`` to ``new`` (see :meth:`Store.changes`)."""

    key: str
    old: Record | None
    new: Record


@dataclass(slots=True)
class StoreStats:
    """Counters, for metrics and tests."""

    deltas_received: int = 0
    deltas_rejected: int = 0  # raised StoreError
    records_merged: int = 0  # remote records that changed the store (deltas and syncs)
    records_stale: int = 0  # expired records ignored on receipt
    records_refreshed: int = 0  # own live records re-stamped by tick
    records_expired: int = 0  # other owners' live records dropped by tick
    tombstones_collected: int = 0
    sync_frames_rejected: int = 0  # raised StoreError
    sync_bytes_sent: int = 0
    sync_bytes_received: int = 0


def _wall_ms(wall: float) -> int:
    if not math.isfinite(wall) or wall < 0:
        raise ValueError(f"wall time must be finite seconds since the epoch, got {wall!r}")
    ms = round(wall * 1000)
    if ms > PHYSICAL_MAX:
        raise ValueError(f"wall time {wall!r} is beyond the 48-bit millisecond range of the HLC")
    return ms


class HybridClock:
    """A hybrid logical clock (Kulkarni et al.): 48-bit milliseconds, 16-bit logical counter.

    Timestamps from :meth:`now` strictly increase, stay close to the wall time, and exceed every
    timestamp :meth:`observe` has accepted. When the logical counter overflows it carries into
    the physical part (the clock runs a millisecond ahead).
    """

    def __init__(self, *, max_drift: float = MAX_DRIFT) -> None:
        if not (math.isfinite(max_drift) and max_drift >= 0):
            raise ValueError(f"max_drift must be a non-negative number of seconds: {max_drift!r}")
        self.max_drift = max_drift
        self._drift_ms = round(max_drift * 1000)
        self._last = 0

    @property
    def last(self) -> int:
        """The highest timestamp issued or observed."""
        return self._last

    def now(self, wall: float) -> int:
        """A timestamp for a local event at ``wall`` (seconds since the epoch)."""
        physical = _wall_ms(wall)
        if physical > self._last >> LOGICAL_BITS:
            self._last = physical << LOGICAL_BITS
        elif self._last < HLC_MAX:
            self._last += 1
        else:
            raise ValueError("the hybrid clock is exhausted (observed the largest timestamp)")
        return self._last

    def check(self, hlc: int, wall: float) -> None:
        """Raise :class:`StoreError` unless ``hlc`` is acceptable from a peer at ``wall``.

        Raises:
            StoreError: ``hlc`` is out of range or more than ``max_drift`` ahead of ``wall``.
        """
        if not 0 <= hlc <= HLC_MAX:
            raise StoreError(f"timestamp {hlc!r} is out of the 64-bit range")
        ahead = (hlc >> LOGICAL_BITS) - _wall_ms(wall)
        if ahead > self._drift_ms:
            raise StoreError(
                f"timestamp is {ahead / 1000:.3f} s ahead of our wall time (max drift "
                f"{self.max_drift} s): the writer's clock is broken"
            )

    def observe(self, hlc: int, wall: float) -> None:
        """Take a remote timestamp into account, so that later local ones exceed it.

        Raises:
            StoreError: ``hlc`` is out of range or more than ``max_drift`` ahead of ``wall``.
        """
        self.check(hlc, wall)
        self._last = max(self._last, hlc)


# --- validation ---------------------------------------------------------------------------------


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"a key must be a string, not {type(key).__name__}"
    if _KEY_CHARS.fullmatch(key) is None:
        return f"key {key[:80]!r} is not 1 to 255 printable ASCII characters without spaces"
    segments = key.split("/")
    if "" in segments:
        return f"key {key!r} has an empty '/'-separated segment"
    if ".." in segments:
        return f"key {key!r} has a '..' segment"
    return None


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"a node name must be a string, not {type(name).__name__}"
    if not 1 <= len(name) <= NAME_MAX or not name.isprintable():
        return f"node name {name[:80]!r} is not 1 to 255 printable characters"
    return None


def _is_u64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= HLC_MAX


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise StoreError(f"{what} is not valid msgpack: {exc}") from exc


def _encode_value(value: Mapping[str, Any], limit: int) -> tuple[bytes, dict[str, Any]]:
    """A local value's wire encoding and its decoded form (what every peer will see)."""
    try:
        as_dict = dict(value)
        blob = msgpack.packb(as_dict, use_bin_type=True)
        decoded = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise ValueError(f"value is not a msgpack-able map with string keys: {exc}") from exc
    if not isinstance(decoded, dict) or not all(isinstance(k, str) for k in decoded):
        raise ValueError("value must be a map with string keys")
    if len(blob) > limit:
        raise ValueError(f"value encodes to {len(blob)} bytes, over max_record_bytes={limit}")
    return blob, decoded


# --- records as the store keeps them ------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    record: Record
    blob: bytes | None  # the value's msgpack encoding, as it travels; None for a tombstone
    digest: int  # 64-bit hash of the whole record
    leaf: int  # 16-bit hash of the key
    seq: int = 0  # identifies the current entry of a key in the timer heap

    @property
    def rank(self) -> tuple[int, str, int]:
        version = self.record.version
        return (version.hlc, version.writer, self.digest)


def _leaf(key: str) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=2, person=b"vxnet-store-key").digest()
    return int.from_bytes(digest, "big")


def _make_entry(record: Record, blob: bytes | None) -> _Entry:
    # Keys are printable ASCII and writers printable: neither holds a NUL, hlc is fixed-width.
    version = record.version
    hasher = hashlib.blake2b(digest_size=8, person=b"vxnet-store-rec")
    hasher.update(record.key.encode() + b"\0" + version.writer.encode() + b"\0")
    hasher.update(version.hlc.to_bytes(8, "big"))
    hasher.update(b"\0" if blob is None else b"\1" + blob)
    digest = int.from_bytes(hasher.digest(), "big")
    return _Entry(record, blob, digest, _leaf(record.key))


def _wire_record(entry: _Entry) -> bytes:
    version = entry.record.version
    packed: bytes = msgpack.packb(
        [entry.record.key, entry.blob, version.hlc, version.writer], use_bin_type=True
    )
    return packed


def _summary(entry: _Entry) -> bytes:
    version = entry.record.version
    packed: bytes = msgpack.packb([entry.record.key, version.hlc, version.writer, entry.digest])
    return packed


def _encode_delta(entry: _Entry) -> bytes:
    return bytes([STORE_MAGIC]) + _array([msgpack.packb(_DELTA), _wire_record(entry)])


def _array(parts: list[bytes]) -> bytes:
    """A msgpack array of already-packed elements."""
    n = len(parts)
    if n <= 15:
        head = bytes([0x90 | n])
    elif n <= 0xFFFF:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(parts)


def _frame(parts: list[bytes]) -> bytes:
    body = _array(parts)
    return _HEADER.pack(STORE_MAGIC, len(body)) + body


def _frame_length(header: bytes) -> int:
    if len(header) < _HEADER.size:
        raise ValueError(f"need the first {_HEADER.size} bytes of a frame, got {len(header)}")
    magic, length = _HEADER.unpack_from(header)
    if magic != STORE_MAGIC:
        raise StoreError(f"not a store frame: first byte {magic:#04x}, want {STORE_MAGIC:#04x}")
    total: int = _HEADER.size + length
    if total > FRAME_MAX:
        raise StoreError(f"frame of {total} bytes is over the {FRAME_MAX}-byte cap")
    return total


def _decode_frame(frame: bytes) -> list[Any]:
    if len(frame) < _HEADER.size:
        raise StoreError(f"frame of {len(frame)} bytes is shorter than its header")
    total = _frame_length(frame)
    if total != len(frame):
        raise StoreError(f"frame header says {total} bytes, got {len(frame)}")
    body = _unpack(frame[_HEADER.size :], "frame body")
    if not isinstance(body, list) or not body or not isinstance(body[0], int):
        raise StoreError(
            f"frame body must be an array starting with its kind, got {_describe(body)}"
        )
    return body


def _bucket_bits(n: int) -> int:
    """``clamp(ceil(log2(n / 4)), 4, 16)``: about four records per bucket."""
    if n <= 4 << MIN_BUCKET_BITS:
        return MIN_BUCKET_BITS
    return min(MAX_BUCKET_BITS, max(MIN_BUCKET_BITS, math.ceil(math.log2(n / 4))))


def delta_key(payload: bytes) -> str:
    """The key a delta writes, e.g. to let a newer delta replace an older one in a queue.

    Raises:
        StoreError: ``payload`` is not a store delta.
    """
    if not payload or payload[0] != STORE_MAGIC:
        raise StoreError("not a store message (wrong first byte)")
    body = _unpack(payload[1:], "delta")
    if not (isinstance(body, list) and len(body) == 2 and body[0] == _DELTA):
        raise StoreError(f"a delta is [1, record], got {_describe(body)}")
    if not (isinstance(body[1], list) and body[1]):
        raise StoreError(f"a delta is [1, record], got {_describe(body)}")
    key = body[1][0]
    problem = _key_problem(key)
    if problem is not None:
        raise StoreError(f"delta: {problem}")
    assert isinstance(key, str)
    return key


def _visible(record: Record | None) -> tuple[Mapping[str, Any], str] | None:
    if record is None or record.value is None:
        return None
    return (record.value, record.owner)


# --- the store ----------------------------------------------------------------------------------


class Store:
    """One node's full copy of the replicated store (see the module's rules)."""

    def __init__(
        self,
        node: str,
        *,
        max_record_bytes: int = 4096,
        tombstone_ttl: float = 86400.0,
        refresh_interval: float | None = None,  # default tombstone_ttl / 4
        owner_grace: float = 30.0,
    ) -> None:
        problem = _name_problem(node)
        if problem is not None:
            raise ValueError(f"node: {problem}")
        if not 1 <= max_record_bytes <= FRAME_MAX // 4:
            raise ValueError(f"max_record_bytes must be 1 to {FRAME_MAX // 4}: {max_record_bytes}")
        if not (math.isfinite(tombstone_ttl) and tombstone_ttl >= 0.002):
            raise ValueError(f"tombstone_ttl must be at least 2 ms: {tombstone_ttl!r}")
        if refresh_interval is None:
            refresh_interval = tombstone_ttl / 4
        if not (0.001 <= refresh_interval < tombstone_ttl):
            raise ValueError(
                f"refresh_interval must be at least 1 ms and below tombstone_ttl "
                f"({tombstone_ttl}): {refresh_interval!r}"
            )
        if not (math.isfinite(owner_grace) and owner_grace >= 0):
            raise ValueError(f"owner_grace must be a non-negative number: {owner_grace!r}")
        self.node = node
        self.max_record_bytes = max_record_bytes
        self.tombstone_ttl = tombstone_ttl
        self.refresh_interval = refresh_interval
        self.owner_grace = owner_grace
        self.clock = HybridClock()
        self.stats = StoreStats()
        self._ttl_ms = round(tombstone_ttl * 1000)
        self._refresh_ms = max(1, min(round(refresh_interval * 1000), self._ttl_ms - 1))
        self._now = 0.0  # the highest wall time seen
        self._entries: dict[str, _Entry] = {}
        self._own: set[str] = set()  # keys whose current record this instance wrote
        self._leaf_xor: dict[int, int] = {}
        self._leaf_keys: dict[int, set[str]] = {}
        self._timers: list[tuple[int, int, str]] = []  # (deadline ms, entry seq, key)
        self._seq = 0
        self._changes: dict[str, Change] = {}
        self._down: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._entries)

    # --- local writes ---------------------------------------------------------------------------

    def put(self, key: str, value: Mapping[str, Any], wall: float) -> bytes:
        """Write ``value`` under ``key``; return the delta to broadcast.

        Raises:
            ValueError: the key breaks the key rules, or the value is not a msgpack-able map with
                string keys or encodes to more than ``max_record_bytes``.
        """
        self._check_local_key(key)
        blob, decoded = _encode_value(value, self.max_record_bytes)
        return self._write(key, MappingProxyType(decoded), blob, wall)

    def delete(self, key: str, wall: float) -> bytes | None:
        """Delete ``key`` (write a tombstone); return the delta, or ``None`` if nothing to delete.

        Raises:
            ValueError: the key breaks the key rules.
        """
        self._check_local_key(key)
        entry = self._entries.get(key)
        if entry is None or entry.record.value is None:
            return None
        return self._write(key, None, None, wall)

    def _check_local_key(self, key: str) -> None:
        problem = _key_problem(key)
        if problem is not None:
            raise ValueError(problem)

    def _write(
        self, key: str, value: Mapping[str, Any] | None, blob: bytes | None, wall: float
    ) -> bytes:
        self._advance(wall)
        version = Version(self.clock.now(self._now), self.node)
        entry = _make_entry(Record(key, value, version, self.node), blob)
        self._install(entry, own=True)
        return _encode_delta(entry)

    # --- reads ----------------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        """The live record under ``key``; ``None`` if missing or deleted."""
        entry = self._entries.get(key)
        if entry is None or entry.record.value is None:
            return None
        return entry.record

    def items(self, prefix: str = "") -> list[Record]:
        """Live records whose key starts with ``prefix``, sorted by key."""
        return [
            self._entries[key].record
            for key in sorted(self._entries)
            if key.startswith(prefix) and self._entries[key].record.value is not None
        ]

    def live_items(self, prefix: str, wall: float) -> list[Record]:
        """:meth:`items` minus the records of owners down for ``owner_grace`` or longer."""
        hidden = self.hidden_owners(wall)
        return [r for r in self.items(prefix) if r.owner not in hidden]

    def hidden_owners(self, wall: float) -> frozenset[str]:
        """The owners down for ``owner_grace`` or longer: :meth:`live_items` hides their records
        (cheap: for a consumer to notice, without a store change, that the live set moved)."""
        return frozenset(o for o, since in self._down.items() if wall - since >= self.owner_grace)

    def records(self) -> list[Record]:
        """Every record, tombstones included, sorted by key (for tests and debugging)."""
        return [self._entries[key].record for key in sorted(self._entries)]

    # --- owner liveness -------------------------------------------------------------------------

    def owner_down(self, owner: str, wall: float) -> None:
        """``owner`` died or left at ``wall``; a repeated call keeps the first time."""
        self._down.setdefault(owner, wall)

    def owner_up(self, owner: str) -> None:
        """``owner`` is alive (again): its records are visible again."""
        self._down.pop(owner, None)

    # --- gossip deltas --------------------------------------------------------------------------

    def receive(self, payload: bytes, wall: float) -> list[bytes]:
        """Merge a delta from a peer; return the deltas to re-broadcast (those that changed us).

        Raises:
            StoreError: the payload is malformed, oversized, breaks the key rules or carries a
                timestamp beyond the max drift; the store is unchanged.
        """
        self.stats.deltas_received += 1
        try:
            entry = self._decode_delta(payload)
            merged = self._merge([entry], wall)
        except StoreError:
            self.stats.deltas_rejected += 1
            raise
        return [_encode_delta(e) for e in merged]

    def changes(self) -> list[Change]:
        """Changes since the last call, local writes included; drained.

        Changes to one key are coalesced (``old`` is the record before the first of them); only
        changes of what readers see (live value and owner) are reported, so re-stamps and
        tombstone collection are not. A live record dropped by :meth:`tick` is reported with a
        tombstone of the same version as ``new``.
        """
        out = list(self._changes.values())
        self._changes.clear()
        return out

    def _decode_delta(self, payload: bytes) -> _Entry:
        if not payload or payload[0] != STORE_MAGIC:
            raise StoreError("not a store message (wrong first byte)")
        if len(payload) > self.max_record_bytes + _DELTA_SLACK:
            raise StoreError(f"delta of {len(payload)} bytes is over the record size cap")
        body = _unpack(payload[1:], "delta")
        if not isinstance(body, list) or len(body) != 2 or body[0] != _DELTA:
            raise StoreError(f"a delta is [1, record], got {_describe(body)}")
        return self._decode_record(body[1], "delta")

    def _decode_record(self, obj: object, where: str) -> _Entry:
        if not isinstance(obj, list) or len(obj) != 4:
            raise StoreError(
                f"{where}: a record is [key, value, hlc, writer], got {_describe(obj)}"
            )
        key, blob, hlc, writer = obj
        problem = _key_problem(key) or _name_problem(writer)
        if problem is not None:
            raise StoreError(f"{where}: {problem}")
        if not _is_u64(hlc):
            raise StoreError(f"{where}: {key!r}: hlc must be a 64-bit unsigned int, not {hlc!r}")
        value: Mapping[str, Any] | None = None
        if blob is not None:
            if not isinstance(blob, bytes):
                raise StoreError(
                    f"{where}: {key!r}: value must be bin or nil, not {_describe(blob)}"
                )
            if len(blob) > self.max_record_bytes:
                raise StoreError(
                    f"{where}: {key!r}: value of {len(blob)} bytes is over "
                    f"max_record_bytes={self.max_record_bytes}"
                )
            decoded = _unpack(blob, f"{where}: {key!r}: value")
            if not isinstance(decoded, dict) or not all(isinstance(k, str) for k in decoded):
                raise StoreError(f"{where}: {key!r}: value must be a map with string keys")
            value = MappingProxyType(decoded)
        return _make_entry(Record(key, value, Version(hlc, writer), writer), blob)

    def _merge(self, entries: list[_Entry], wall: float) -> list[_Entry]:
        """Merge validated entries; all or nothing: only the drift check can refuse."""
        wall_ms = _wall_ms(wall)
        if entries:
            newest = max(e.record.version.hlc for e in entries)
            self.clock.observe(newest, wall)  # StoreError before anything changed
        self._advance(wall)
        now_ms = max(wall_ms, self._now_ms)
        merged: list[_Entry] = []
        for entry in entries:
            if self._expired(entry.record.version.hlc, now_ms):
                self.stats.records_stale += 1
                continue
            current = self._entries.get(entry.record.key)
            if current is not None and entry.rank <= current.rank:
                continue
            self._install(entry, own=False)
            self.stats.records_merged += 1
            merged.append(entry)
        return merged

    # --- anti-entropy ---------------------------------------------------------------------------

    def sync_request(self) -> bytes:
        """Round 1 of an exchange we initiate: the bucketed digests of the whole store."""
        bits = _bucket_bits(len(self._entries))
        digests = self._bucket_digests(bits)
        packed = msgpack.packb(struct.pack(f">{len(digests)}Q", *digests), use_bin_type=True)
        frame = _frame([msgpack.packb(_SYNC_DIGESTS), msgpack.packb(bits), packed])
        self.stats.sync_bytes_sent += len(frame)
        return frame

    def handle_sync(self, frame: bytes, wall: float) -> bytes:
        """Answer a round-1 (digests) or round-2 (records and wanted keys) request frame.

        Raises:
            StoreError: the frame is malformed, over the cap or not a request; the store is
                unchanged.
        """
        self.stats.sync_bytes_received += len(frame)
        try:
            body = _decode_frame(frame)
            if body[0] == _SYNC_DIGESTS:
                reply = self._answer_digests(body, wall)
            elif body[0] == _SYNC_PUSH:
                reply = self._answer_push(body, wall)
            else:
                raise StoreError(f"sync request: unexpected frame kind {body[0]!r}")
        except StoreError:
            self.stats.sync_frames_rejected += 1
            raise
        self.stats.sync_bytes_sent += len(reply)
        return reply

    def sync_step(self, frame: bytes, wall: float) -> bytes | None:
        """Go on with an exchange we initiated, given the responder's reply.

        Returns:
            The round-2 request for a round-1 reply, or ``None`` when the exchange is over: after
            merging a round-2 reply, or when the round-1 reply shows nothing to exchange.

        Raises:
            StoreError: the frame is malformed, over the cap or not a reply; the store is
                unchanged.
        """
        self.stats.sync_bytes_received += len(frame)
        try:
            body = _decode_frame(frame)
            if body[0] == _SYNC_SUMMARIES:
                request = self._push_for(body, wall)
            elif body[0] == _SYNC_RECORDS:
                if len(body) != 2 or not isinstance(body[1], list):
                    raise StoreError(f"a records reply is [4, records], got {_describe(body)}")
                entries = [self._decode_record(r, "sync records") for r in body[1]]
                self._merge(entries, wall)
                request = None
            else:
                raise StoreError(f"sync reply: unexpected frame kind {body[0]!r}")
        except StoreError:
            self.stats.sync_frames_rejected += 1
            raise
        if request is not None:
            self.stats.sync_bytes_sent += len(request)
        return request

    def frame_length(self, header: bytes) -> int:
        """The whole length of a frame, from its first 5 bytes (for drivers reading streams).

        Raises:
            StoreError: not a store frame, or over ``FRAME_MAX``.
            ValueError: fewer than 5 bytes given.
        """
        return _frame_length(header)

    def _answer_digests(self, body: list[Any], wall: float) -> bytes:
        if len(body) != 3:
            raise StoreError(f"a digests request is [1, b, digests], got {len(body)} items")
        bits, packed = body[1], body[2]
        if not isinstance(bits, int) or isinstance(bits, bool) or not 0 <= bits <= LEAF_BITS:
            raise StoreError(f"digests request: bucket bits must be 0 to 16, not {bits!r}")
        if not isinstance(packed, bytes) or len(packed) != 8 << bits:
            raise StoreError(f"digests request: want {8 << bits} bytes of digests for b={bits}")
        theirs = struct.unpack(f">{1 << bits}Q", packed)
        mine = self._bucket_digests(bits)
        now_ms = max(_wall_ms(wall), self._now_ms)
        buckets: list[bytes] = []
        summaries: list[bytes] = []
        room = _FRAME_ROOM
        for bucket, (ours, their) in enumerate(zip(mine, theirs, strict=True)):
            if ours == their:
                continue
            parts = [
                _summary(e)
                for e in self._entries_in_bucket(bucket, bits)
                if not self._expired(e.record.version.hlc, now_ms)
            ]
            cost = sum(map(len, parts)) + 5
            if cost > room:
                break  # whole buckets only; the rest waits for the next exchange
            room -= cost
            buckets.append(msgpack.packb(bucket))
            summaries.extend(parts)
        return _frame(
            [
                msgpack.packb(_SYNC_SUMMARIES),
                msgpack.packb(bits),
                _array(buckets),
                _array(summaries),
            ]
        )

    def _push_for(self, body: list[Any], wall: float) -> bytes | None:
        if len(body) != 4:
            raise StoreError(f"a summaries reply is [2, b, buckets, summaries], got {len(body)}")
        bits, buckets, summaries = body[1], body[2], body[3]
        if not isinstance(bits, int) or isinstance(bits, bool) or not 0 <= bits <= LEAF_BITS:
            raise StoreError(f"summaries reply: bucket bits must be 0 to 16, not {bits!r}")
        if not isinstance(buckets, list) or not isinstance(summaries, list):
            raise StoreError("summaries reply: buckets and summaries must be arrays")
        previous = -1
        for bucket in buckets:
            if not isinstance(bucket, int) or not previous < bucket < 1 << bits:
                raise StoreError(f"summaries reply: bucket {bucket!r} out of order or range")
            previous = bucket
        listed = set(buckets)
        shift = LEAF_BITS - bits
        theirs: dict[str, tuple[int, str, int]] = {}
        for item in summaries:
            if not isinstance(item, list) or len(item) != 4:
                raise StoreError(f"a summary is [key, hlc, writer, hash], got {_describe(item)}")
            key, hlc, writer, digest = item
            problem = _key_problem(key) or _name_problem(writer)
            if problem is not None:
                raise StoreError(f"summaries reply: {problem}")
            if not _is_u64(hlc) or not _is_u64(digest):
                raise StoreError(f"summaries reply: {key!r}: hlc and hash must be 64-bit ints")
            if _leaf(key) >> shift not in listed:
                raise StoreError(f"summaries reply: {key!r} is not in a listed bucket")
            if key in theirs:
                raise StoreError(f"summaries reply: {key!r} appears twice")
            theirs[key] = (hlc, writer, digest)
        self._advance(wall)
        now_ms = self._now_ms
        room = _FRAME_ROOM
        push: list[bytes] = []
        for bucket in buckets:
            for entry in self._entries_in_bucket(bucket, bits):
                their_rank = theirs.get(entry.record.key)
                if self._expired(entry.record.version.hlc, now_ms):
                    continue
                if their_rank is None or their_rank < entry.rank:
                    part = _wire_record(entry)
                    if len(part) > room:
                        break
                    room -= len(part)
                    push.append(part)
        want: list[bytes] = []
        for key, rank in theirs.items():
            held = self._entries.get(key)
            if held is not None and held.rank >= rank:
                continue
            if self._expired(rank[0], now_ms) or not self._acceptable(rank[0], wall):
                continue  # we would refuse it anyway
            part = msgpack.packb(key)
            if len(part) > room:
                break
            room -= len(part)
            want.append(part)
        if not push and not want:
            return None
        return _frame([msgpack.packb(_SYNC_PUSH), _array(push), _array(want)])

    def _answer_push(self, body: list[Any], wall: float) -> bytes:
        if len(body) != 3 or not isinstance(body[1], list) or not isinstance(body[2], list):
            raise StoreError(f"a push request is [3, records, wanted], got {_describe(body)}")
        entries = [self._decode_record(r, "sync push") for r in body[1]]
        for key in body[2]:
            problem = _key_problem(key)
            if problem is not None:
                raise StoreError(f"sync push: wanted {problem}")
        self._merge(entries, wall)
        now_ms = self._now_ms
        room = _FRAME_ROOM
        parts: list[bytes] = []
        for key in dict.fromkeys(body[2]):
            held = self._entries.get(key)
            if held is None or self._expired(held.record.version.hlc, now_ms):
                continue
            part = _wire_record(held)
            if len(part) > room:
                break
            room -= len(part)
            parts.append(part)
        return _frame([msgpack.packb(_SYNC_RECORDS), _array(parts)])

    def _bucket_digests(self, bits: int) -> list[int]:
        digests = [0] * (1 << bits)
        shift = LEAF_BITS - bits
        for leaf, xor in self._leaf_xor.items():
            digests[leaf >> shift] ^= xor
        return digests

    def _entries_in_bucket(self, bucket: int, bits: int) -> Iterator[_Entry]:
        shift = LEAF_BITS - bits
        for leaf in range(bucket << shift, (bucket + 1) << shift):
            for key in sorted(self._leaf_keys.get(leaf, ())):
                yield self._entries[key]

    # --- maintenance ----------------------------------------------------------------------------

    def tick(self, wall: float) -> list[bytes]:
        """Collect expired tombstones, drop other owners' expired records, refresh our own.

        Returns:
            The deltas of our re-stamped records, to broadcast.
        """
        self._advance(wall)
        now_ms = self._now_ms
        deltas: list[bytes] = []
        while self._timers and self._timers[0][0] <= now_ms:
            _, seq, key = heapq.heappop(self._timers)
            entry = self._entries.get(key)
            if entry is None or entry.seq != seq:
                continue
            record = entry.record
            if record.value is not None and key in self._own:
                version = Version(self.clock.now(self._now), self.node)
                fresh = _make_entry(Record(key, record.value, version, self.node), entry.blob)
                self._install(fresh, own=True)
                self.stats.records_refreshed += 1
                deltas.append(_encode_delta(fresh))
                continue
            self._remove(entry)
            if record.value is None:
                self.stats.tombstones_collected += 1
            else:
                self.stats.records_expired += 1
                gone = Record(key, None, record.version, record.owner)
                self._note_change(key, record, gone)
        return deltas

    def next_deadline(self) -> float:
        """The wall time of the next :meth:`tick` with work to do (``math.inf`` if none)."""
        while self._timers:
            deadline, seq, key = self._timers[0]
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq:
                return deadline / 1000
            heapq.heappop(self._timers)
        return math.inf

    # --- bookkeeping ----------------------------------------------------------------------------

    @property
    def _now_ms(self) -> int:
        return round(self._now * 1000)

    def _advance(self, wall: float) -> None:
        _wall_ms(wall)  # ValueError for a wall time that is not one
        self._now = max(self._now, wall)

    def _expired(self, hlc: int, now_ms: int) -> bool:
        return (hlc >> LOGICAL_BITS) + self._ttl_ms <= now_ms

    def _acceptable(self, hlc: int, wall: float) -> bool:
        try:
            self.clock.check(hlc, wall)
        except StoreError:
            return False
        return True

    def _deadline_ms(self, entry: _Entry) -> int:
        physical = entry.record.version.hlc >> LOGICAL_BITS
        if entry.record.value is not None and entry.record.key in self._own:
            return physical + self._refresh_ms
        return physical + self._ttl_ms

    def _install(self, entry: _Entry, *, own: bool) -> None:
        key = entry.record.key
        old = self._entries.get(key)
        if old is not None:
            self._unindex(old)
        self._seq += 1
        entry.seq = self._seq
        self._entries[key] = entry
        self._leaf_xor[entry.leaf] = self._leaf_xor.get(entry.leaf, 0) ^ entry.digest
        self._leaf_keys.setdefault(entry.leaf, set()).add(key)
        if own:
            self._own.add(key)
        else:
            self._own.discard(key)
        heapq.heappush(self._timers, (self._deadline_ms(entry), entry.seq, key))
        if len(self._timers) > 2 * len(self._entries) + 64:  # drop timers of replaced entries
            live = [(self._deadline_ms(e), e.seq, k) for k, e in self._entries.items()]
            heapq.heapify(live)
            self._timers = live
        self._note_change(key, None if old is None else old.record, entry.record)

    def _remove(self, entry: _Entry) -> None:
        key = entry.record.key
        del self._entries[key]
        self._own.discard(key)
        self._unindex(entry)

    def _unindex(self, entry: _Entry) -> None:
        leaf, key = entry.leaf, entry.record.key
        self._leaf_xor[leaf] ^= entry.digest
        keys = self._leaf_keys[leaf]
        keys.discard(key)
        if not keys:
            del self._leaf_keys[leaf]
            del self._leaf_xor[leaf]

    def _note_change(self, key: str, old: Record | None, new: Record) -> None:
        pending = self._changes.pop(key, None)
        first = old if pending is None else pending.old
        if _visible(first) != _visible(new):
            self._changes[key] = Change(key, first, new)
