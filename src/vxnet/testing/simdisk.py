"""An in-memory :class:`~._logstore.LogStorage` that crashes, tears writes and fails fsyncs on cue.

For deterministic simulation: no I/O, no clock, no global randomness. The disk keeps encoded
records (a CRC32 over the body, then the body), one slot per key (the meta record, the snapshot,
one per log position), exactly like a log-structured file compacted after every fsync.

Rules — every mutating call runs these phases, asking ``crash_hook(point)`` before each point:

======================  ====================================================================
crash point             what survives the crash (:class:`SimCrash` is then raised)
======================  ====================================================================
``"before-write"``      nothing of this call
``"after-write"``       nothing of this call; if ``torn()`` says so, the call's *last* record
                        survives with torn bytes, which ``load`` detects, drops and reports
                        as ``torn_tail`` (the call never returned: nothing depended on it)
``"after-sync"``        all of this call (it is durable; only the return was lost)
======================  ====================================================================

* Phases: ``before-write`` -> write to the page cache -> ``after-write`` -> fsync -> ``after-sync``
  -> return. ``fail_next_sync()`` makes the next fsync raise :class:`StorageFailure`; the call's
  writes are then dropped (the page cache is not to be trusted after a failed fsync).
* A torn record never replaces the durable record of its key: earlier synced state is never
  affected by later crashes. It stays on the disk, and ``load`` keeps reporting ``torn_tail``,
  until a later durable write supersedes its key (the same meta/snapshot/position, or a snapshot
  above the position) or the disk is wiped.
* ``rot(kind, position)`` damages a *synced* record (bit rot): ``load`` leaves it out and flags
  ``corrupt``, which makes the replica recover before it votes again.
* ``put_entries(..., sync=False)`` only writes to the page cache (crash point ``before-write``);
  the next synced call's fsync makes it durable with its own records, in order. A crash at any
  point, or a restart (``load``), loses what is still unsynced.
* ``load`` decodes the records afresh each time: no aliasing with the disk's own structures.
* ``wipe()`` loses the disk: the next ``load`` is EMPTY. ``close()`` releases nothing; the same
  disk is handed to the restarted replica.
"""

from __future__ import annotations

import random
import struct
import zlib
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from vxnet.replog import Durable, Entry, ReplicaStatus, Snapshot, StorageFailure

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["CRASH_POINTS", "CrashPoint", "SimCrash", "SimDisk"]

CrashPoint: TypeAlias = Literal["before-write", "after-write", "after-sync"]
CRASH_POINTS: Final[tuple[CrashPoint, ...]] = ("before-write", "after-write", "after-sync")

_INT64_MAX: Final = 2**63 - 1
_STATUSES: Final = frozenset(s.value for s in ReplicaStatus)
_META: Final = struct.Struct(">cqq")  # b"M", status, promised
_ENTRY: Final = struct.Struct(">cqq?")  # b"E", position, ballot, chosen; then the value
_SNAPSHOT: Final = struct.Struct(">cq")  # b"S", position; then the data
_CRC: Final = struct.Struct(">I")

_Key: TypeAlias = tuple[str, int]  # ("meta", 0), ("snapshot", 0) or ("entry", position)
_META_KEY: Final[_Key] = ("meta", 0)
_SNAPSHOT_KEY: Final[_Key] = ("snapshot", 0)


class SimCrash(Exception):
    """The simulated process crashed at ``point``; the disk keeps only what the point allows.

    Attributes:
        point: The crash point.
    """

    def __init__(self, point: CrashPoint) -> None:
        super().__init__(f"simulated crash at {point}")
        self.point: CrashPoint = point


class SimDisk:
    """A replica's disk for simulation.

    Args:
        crash_hook: Asked before each crash point of each mutating call; True crashes there.
        torn: Whether a crash after the write tears the call's last record: a function, or a
            seeded ``random.Random`` (a fair coin); by default writes are never torn.
    """

    def __init__(
        self,
        crash_hook: Callable[[CrashPoint], bool] | None = None,
        torn: Callable[[], bool] | random.Random | None = None,
    ) -> None:
        self._crash_hook = crash_hook
        if isinstance(torn, random.Random):
            rng = torn
            self._torn: Callable[[], bool] = lambda: rng.random() < 0.5
        elif torn is None:
            self._torn = lambda: False
        else:
            self._torn = torn
        self._records: dict[_Key, bytes] = {}  # durable and valid
        self._garbage: dict[_Key, bytes] = {}  # durable torn records (their checksum fails)
        self._fail_next_sync = False
        self._unsynced: list[tuple[_Key, bytes]] = []  # page cache of sync=False writes

    def load(self) -> Durable:
        """Everything durable, minus records whose checksum fails (then ``corrupt`` is set)."""
        self._unsynced = []  # a new process: what the crashed one did not sync is gone
        durable = Durable()
        for record in self._records.values():
            if not _apply(durable, record):
                durable.corrupt = True
        for record in self._garbage.values():
            if not _apply(durable, record):
                durable.torn_tail = True
        return durable

    def rot(self, kind: str, position: int = 0) -> bool:
        """Damage the synced ``meta``, ``snapshot`` or ``entry`` record (at ``position``).

        Returns:
            Whether there was such a record to damage.
        """
        key: _Key = (kind, position if kind == "entry" else 0)
        record = self._records.get(key)
        if record is None:
            return False
        self._records[key] = record[:-1] + bytes([record[-1] ^ 0xFF])
        return True

    def set_meta(self, status: ReplicaStatus, promised: int) -> None:
        """Persist the status and the promised proposal number.

        Raises:
            SimCrash: The crash hook crashed the call.
            StorageFailure: ``fail_next_sync`` was armed.
            ValueError: ``promised`` does not fit a signed 64-bit integer.
        """
        _check_int64("promised", promised)
        body = _META.pack(b"M", int(ReplicaStatus(status)), promised)
        self._run([(_META_KEY, _seal(body))])

    def put_entries(self, entries: Sequence[Entry], *, sync: bool = True) -> None:
        """Persist entries (insert or replace by position), atomically; durable if ``sync``.

        Raises:
            SimCrash: The crash hook crashed the call.
            StorageFailure: ``fail_next_sync`` was armed; nothing of ``entries`` is durable.
            ValueError: A position or ballot does not fit a signed 64-bit integer.
        """
        writes: list[tuple[_Key, bytes]] = []
        for e in entries:
            _check_int64("position", e.position)
            _check_int64("ballot", e.ballot)
            body = _ENTRY.pack(b"E", e.position, e.ballot, e.chosen) + e.value
            writes.append((("entry", e.position), _seal(body)))
        if sync:
            self._run(writes)
        elif self._crashes_at("before-write"):
            self._unsynced = []
            raise SimCrash("before-write")
        else:
            self._unsynced.extend(writes)

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Persist a snapshot and drop every entry below its position.

        Raises:
            SimCrash: The crash hook crashed the call.
            StorageFailure: ``fail_next_sync`` was armed.
            ValueError: The position does not fit a signed 64-bit integer.
        """
        _check_int64("position", snapshot.position)
        body = _SNAPSHOT.pack(b"S", snapshot.position) + snapshot.data
        self._run([(_SNAPSHOT_KEY, _seal(body))], drop_below=snapshot.position)

    def close(self) -> None:
        """Nothing to release: the disk outlives the replica that used it."""

    def wipe(self) -> None:
        """Lose the whole disk: the next ``load`` is EMPTY."""
        self._records.clear()
        self._garbage.clear()
        self._unsynced = []

    def fail_next_sync(self) -> None:
        """Make the next fsync raise :class:`StorageFailure` (the call's writes are dropped)."""
        self._fail_next_sync = True

    def _crashes_at(self, point: CrashPoint) -> bool:
        return self._crash_hook is not None and self._crash_hook(point)

    def _run(self, writes: list[tuple[_Key, bytes]], drop_below: int | None = None) -> None:
        earlier, self._unsynced = self._unsynced, []
        if self._crashes_at("before-write"):
            raise SimCrash("before-write")
        if self._crashes_at("after-write"):
            if writes and self._torn():
                key, record = writes[-1]
                self._garbage[key] = _tear(record)
            raise SimCrash("after-write")
        if self._fail_next_sync:
            self._fail_next_sync = False
            raise StorageFailure("simulated disk: fsync failed")
        for key, record in [*earlier, *writes]:  # the fsync makes the page cache durable
            self._records[key] = record
            self._garbage.pop(key, None)
        if drop_below is not None:
            for store in (self._records, self._garbage):
                for key in [k for k in store if k[0] == "entry" and k[1] < drop_below]:
                    del store[key]
        if self._crashes_at("after-sync"):
            raise SimCrash("after-sync")


def _check_int64(name: str, value: int) -> None:
    if not 0 <= value <= _INT64_MAX:
        raise ValueError(f"{name} must be in [0, 2**63), got {value}")


def _seal(body: bytes) -> bytes:
    return _CRC.pack(zlib.crc32(body)) + body


def _tear(record: bytes) -> bytes:
    """The record as a torn write leaves it: the first half written, the rest zeros."""
    half = len(record) // 2
    torn = record[:half] + bytes(len(record) - half)
    if _unseal(torn) is not None:  # the tail was zeros already: damage a byte CRC32 must catch
        torn = torn[:-1] + bytes([torn[-1] ^ 0xFF])
    return torn


def _unseal(record: bytes) -> bytes | None:
    if len(record) < _CRC.size:
        return None
    (crc,) = _CRC.unpack_from(record)
    body = record[_CRC.size :]
    return body if zlib.crc32(body) == crc else None


def _apply(durable: Durable, record: bytes) -> bool:
    """Add one record to ``durable``; False if it is corrupt (checksum or layout)."""
    body = _unseal(record)
    if body is None or not body:
        return False
    kind = body[:1]
    if kind == b"M" and len(body) == _META.size:
        _, status, promised = _META.unpack(body)
        if status not in _STATUSES:
            return False
        durable.status = ReplicaStatus(status)
        durable.promised = promised
    elif kind == b"E" and len(body) >= _ENTRY.size:
        _, position, ballot, chosen = _ENTRY.unpack_from(body)
        durable.entries[position] = Entry(position, ballot, body[_ENTRY.size :], chosen)
    elif kind == b"S" and len(body) >= _SNAPSHOT.size:
        _, position = _SNAPSHOT.unpack_from(body)
        durable.snapshot = Snapshot(position, body[_SNAPSHOT.size :])
    else:
        return False
    return True
