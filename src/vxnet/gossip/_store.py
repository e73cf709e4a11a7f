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

The gossip deltas and the anti-entropy exchange are described in :mod:`._store_messages`; records
and the key rules in :mod:`._store_records`, the clock in :mod:`._hlc`, the record hashes and
digests in :mod:`._store_digests`, encoding and validation in :mod:`._store_codec`.

Bad input: every message is decoded and validated whole before anything is merged; bytes that
are malformed, oversized, of the wrong type, with keys that break the key rules or a timestamp
more than ``max_drift`` ahead of the wall raise :class:`StoreError` (counted) and leave the store
as it was. Local misuse (a bad key or value in :meth:`Store.put`) raises :class:`ValueError`.
"""

from __future__ import annotations

import heapq
import math
import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import msgpack

from vxnet.gossip._errors import StoreError
from vxnet.gossip._hlc import LOGICAL_BITS, HybridClock, wall_to_ms
from vxnet.gossip._store_codec import (
    FRAME_HEADER,
    check_key_and_writer,
    decode_delta,
    decode_frame,
    decode_record,
    describe,
    encode_delta,
    encode_frame,
    encode_record,
    encode_summary,
    frame_length_from_header,
    is_u64,
    pack_array,
)
from vxnet.gossip._store_digests import LEAF_BITS, Entry, bucket_bits, key_leaf, make_entry
from vxnet.gossip._store_messages import (
    FRAME_MAX,
    SYNC_DIGESTS,
    SYNC_PUSH,
    SYNC_RECORDS,
    SYNC_SUMMARIES,
)
from vxnet.gossip._store_records import (
    Change,
    Record,
    Version,
    encode_value,
    key_problem,
    name_problem,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = ["Store", "StoreStats"]

_FRAME_ROOM: Final = FRAME_MAX - FRAME_HEADER.size - 64  # what lists in a body may fill


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
        problem = name_problem(node)
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
        self._entries: dict[str, Entry] = {}
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
        blob, decoded = encode_value(value, self.max_record_bytes)
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
        problem = key_problem(key)
        if problem is not None:
            raise ValueError(problem)

    def _write(
        self, key: str, value: Mapping[str, Any] | None, blob: bytes | None, wall: float
    ) -> bytes:
        self._advance(wall)
        version = Version(self.clock.now(self._now), self.node)
        entry = make_entry(Record(key, value, version, self.node), blob)
        self._install(entry, own=True)
        return encode_delta(entry)

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
            entry = decode_delta(payload, self.max_record_bytes)
            merged = self._merge([entry], wall)
        except StoreError:
            self.stats.deltas_rejected += 1
            raise
        return [encode_delta(e) for e in merged]

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

    def _merge(self, entries: list[Entry], wall: float) -> list[Entry]:
        """Merge validated entries; all or nothing: only the drift check can refuse."""
        wall_ms = wall_to_ms(wall)
        if entries:
            newest = max(e.record.version.hlc for e in entries)
            self.clock.observe(newest, wall)  # StoreError before anything changed
        self._advance(wall)
        now_ms = max(wall_ms, self._now_ms)
        merged: list[Entry] = []
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
        bits = bucket_bits(len(self._entries))
        digests = self._bucket_digests(bits)
        packed = msgpack.packb(struct.pack(f">{len(digests)}Q", *digests), use_bin_type=True)
        frame = encode_frame([msgpack.packb(SYNC_DIGESTS), msgpack.packb(bits), packed])
        self.stats.sync_bytes_sent += len(frame)
        return frame

    def handle_sync(self, frame: bytes, wall: float) -> bytes:
        """Answer a round-1 (digests) or round-2 (records and wanted keys) request frame.

        Raises:
            StoreError: the frame is malformed, over the cap or not a request; the store is
                unchanged.
        """
        reply = self._counted(frame, lambda body: self._answer(body, wall))
        assert reply is not None
        return reply

    def _answer(self, body: list[Any], wall: float) -> bytes:
        if body[0] == SYNC_DIGESTS:
            return self._answer_digests(body, wall)
        if body[0] == SYNC_PUSH:
            return self._answer_push(body, wall)
        raise StoreError(f"sync request: unexpected frame kind {body[0]!r}")

    def sync_step(self, frame: bytes, wall: float) -> bytes | None:
        """Go on with an exchange we initiated, given the responder's reply.

        Returns:
            The round-2 request for a round-1 reply, or ``None`` when the exchange is over: after
            merging a round-2 reply, or when the round-1 reply shows nothing to exchange.

        Raises:
            StoreError: the frame is malformed, over the cap or not a reply; the store is
                unchanged.
        """
        return self._counted(frame, lambda body: self._step(body, wall))

    def _step(self, body: list[Any], wall: float) -> bytes | None:
        if body[0] == SYNC_SUMMARIES:
            return self._push_for(body, wall)
        if body[0] == SYNC_RECORDS:
            if len(body) != 2 or not isinstance(body[1], list):
                raise StoreError(f"a records reply is [4, records], got {describe(body)}")
            entries = [decode_record(r, "sync records", self.max_record_bytes) for r in body[1]]
            self._merge(entries, wall)
            return None
        raise StoreError(f"sync reply: unexpected frame kind {body[0]!r}")

    def _counted(self, frame: bytes, handle: Callable[[list[Any]], bytes | None]) -> bytes | None:
        """``handle`` the decoded ``frame``, counting the bytes both ways and a rejection."""
        self.stats.sync_bytes_received += len(frame)
        try:
            reply = handle(decode_frame(frame))
        except StoreError:
            self.stats.sync_frames_rejected += 1
            raise
        if reply is not None:
            self.stats.sync_bytes_sent += len(reply)
        return reply

    def frame_length(self, header: bytes) -> int:
        """The whole length of a frame, from its first 5 bytes (for drivers reading streams).

        Raises:
            StoreError: not a store frame, or over ``FRAME_MAX``.
            ValueError: fewer than 5 bytes given.
        """
        return frame_length_from_header(header)

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
        now_ms = max(wall_to_ms(wall), self._now_ms)
        buckets: list[bytes] = []
        summaries: list[bytes] = []
        room = _FRAME_ROOM
        for bucket, (ours, their) in enumerate(zip(mine, theirs, strict=True)):
            if ours == their:
                continue
            parts = [
                encode_summary(e)
                for e in self._entries_in_bucket(bucket, bits)
                if not self._expired(e.record.version.hlc, now_ms)
            ]
            cost = sum(map(len, parts)) + 5
            if cost > room:
                break  # whole buckets only; the rest waits for the next exchange
            room -= cost
            buckets.append(msgpack.packb(bucket))
            summaries.extend(parts)
        return encode_frame(
            [
                msgpack.packb(SYNC_SUMMARIES),
                msgpack.packb(bits),
                pack_array(buckets),
                pack_array(summaries),
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
                raise StoreError(f"a summary is [key, hlc, writer, hash], got {describe(item)}")
            key, hlc, writer, digest = item
            check_key_and_writer(key, writer, "summaries reply")
            if not is_u64(hlc) or not is_u64(digest):
                raise StoreError(f"summaries reply: {key!r}: hlc and hash must be 64-bit ints")
            if key_leaf(key) >> shift not in listed:
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
                    part = encode_record(entry)
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
        return encode_frame([msgpack.packb(SYNC_PUSH), pack_array(push), pack_array(want)])

    def _answer_push(self, body: list[Any], wall: float) -> bytes:
        if len(body) != 3 or not isinstance(body[1], list) or not isinstance(body[2], list):
            raise StoreError(f"a push request is [3, records, wanted], got {describe(body)}")
        entries = [decode_record(r, "sync push", self.max_record_bytes) for r in body[1]]
        for key in body[2]:
            problem = key_problem(key)
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
            part = encode_record(held)
            if len(part) > room:
                break
            room -= len(part)
            parts.append(part)
        return encode_frame([msgpack.packb(SYNC_RECORDS), pack_array(parts)])

    def _bucket_digests(self, bits: int) -> list[int]:
        digests = [0] * (1 << bits)
        shift = LEAF_BITS - bits
        for leaf, xor in self._leaf_xor.items():
            digests[leaf >> shift] ^= xor
        return digests

    def _entries_in_bucket(self, bucket: int, bits: int) -> Iterator[Entry]:
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
                fresh = make_entry(Record(key, record.value, version, self.node), entry.blob)
                self._install(fresh, own=True)
                self.stats.records_refreshed += 1
                deltas.append(encode_delta(fresh))
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
        wall_to_ms(wall)  # ValueError for a wall time that is not one
        self._now = max(self._now, wall)

    def _expired(self, hlc: int, now_ms: int) -> bool:
        return (hlc >> LOGICAL_BITS) + self._ttl_ms <= now_ms

    def _acceptable(self, hlc: int, wall: float) -> bool:
        try:
            self.clock.check(hlc, wall)
        except StoreError:
            return False
        return True

    def _deadline_ms(self, entry: Entry) -> int:
        physical = entry.record.version.hlc >> LOGICAL_BITS
        if entry.record.value is not None and entry.record.key in self._own:
            return physical + self._refresh_ms
        return physical + self._ttl_ms

    def _install(self, entry: Entry, *, own: bool) -> None:
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

    def _remove(self, entry: Entry) -> None:
        key = entry.record.key
        del self._entries[key]
        self._own.discard(key)
        self._unindex(entry)

    def _unindex(self, entry: Entry) -> None:
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
