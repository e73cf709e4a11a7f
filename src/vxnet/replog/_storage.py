"""What a replica of the replicated log keeps on disk, and the seam to the disk.

A replica's durable state is its status, the highest proposal number it promised, the entries it
accepted (with the proposal they were accepted under, and whether they are known chosen) and, once
the log has been truncated, the snapshot that replaces the truncated prefix. Every method of
:class:`LogStorage` that changes the state returns only once the change is durable (fsync). The
replica itself never calls them: it asks for writes (:class:`SetMeta`, :class:`PutEntries`,
:class:`InstallSnapshot`), its driver performs them in order (:func:`perform_writes`, in a worker
thread in the server) and reports them done, and only then do the answers that depend on them
leave (see "Writes" in :mod:`._core`).

Rules for implementations:

* ``load`` returns everything that was durable. A record whose checksum does not match is *not*
  returned: ``load`` leaves it out and sets ``Durable.corrupt``; the replica then does not vote
  until it has caught up from a quorum (it may have forgotten a promise or an acceptance).
* The torn tail of a write that crashed before its fsync returned is different: that call never
  returned, so no answer depended on it. A storage that can tell (a log-structured file with a bad
  last record; the simulated disk) drops it and sets ``Durable.torn_tail``, not ``corrupt``.
  SQLite's atomic commits never leave one.
* A failed write or fsync raises :class:`StorageFailure`; the replica must stop (a replica that
  cannot persist must not answer as if it had).
* ``put_entries`` is atomic: after a crash either all of its entries are durable or none is, except
  for a simulated torn write, which the checksum then exposes.
* ``put_entries(..., sync=False)`` skips the fsync: a crash may lose the write (whole), and the
  next synced call makes it durable too (writes become durable in the order they were made). The
  replica uses it only for what it can learn again: that entries are chosen, and chosen entries
  learned from a peer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "Durable",
    "Entry",
    "InstallSnapshot",
    "LogStorage",
    "PutEntries",
    "ReplicaStatus",
    "SetMeta",
    "Snapshot",
    "StorageFailure",
    "Write",
    "perform_writes",
]


class StorageFailure(Exception):
    """The disk refused a write or an fsync: the replica must stop."""


class ReplicaStatus(enum.IntEnum):
    """Mesos's replica states: only a VOTING replica answers promises and accepts."""

    EMPTY = 0  # no durable state at all (a new or wiped disk)
    RECOVERING = 1  # catching up from a quorum before it may vote again
    VOTING = 2
    STARTING = 3  # a new cluster initialising: a quorum was EMPTY or STARTING


@dataclass(frozen=True, slots=True)
class Entry:
    """One log position as this replica accepted it.

    Attributes:
        position: The log position (0-based).
        ballot: The proposal number it was accepted under.
        value: The value; ``b""`` is a no-op a new coordinator fills a hole with.
        chosen: Whether this replica knows the value is chosen (learned).
    """

    position: int
    ballot: int
    value: bytes
    chosen: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine's state after applying every position below ``position``."""

    position: int
    data: bytes


@dataclass(slots=True)
class Durable:
    """Everything :meth:`LogStorage.load` found."""

    status: ReplicaStatus = ReplicaStatus.EMPTY
    promised: int = 0
    snapshot: Snapshot | None = None
    entries: dict[int, Entry] = field(default_factory=dict)
    corrupt: bool = False
    torn_tail: bool = False


class LogStorage(Protocol):
    """A replica's disk. Each mutating call is durable when it returns."""

    def load(self) -> Durable:
        """Everything durable, minus records whose checksum fails (then ``corrupt`` is set)."""
        ...

    def set_meta(self, status: ReplicaStatus, promised: int) -> None:
        """Persist the status and the promised proposal number."""
        ...

    def put_entries(self, entries: Sequence[Entry], *, sync: bool = True) -> None:
        """Persist entries (insert or replace by position), atomically; durable if ``sync``."""
        ...

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Persist a snapshot and drop every entry below its position."""
        ...

    def close(self) -> None:
        """Release the disk."""
        ...


# --- writes the replica asks for (its effects on the disk) -----------------------------------


@dataclass(frozen=True, slots=True)
class SetMeta:
    """Persist the status and the promised ballot (:meth:`LogStorage.set_meta`).

    ``seq`` numbers the replica's writes 1, 2, 3, ... in the order they must be performed.
    """

    seq: int
    status: ReplicaStatus
    promised: int


@dataclass(frozen=True, slots=True)
class PutEntries:
    """Persist entries (:meth:`LogStorage.put_entries`); durable on return if ``sync``."""

    seq: int
    entries: tuple[Entry, ...]
    sync: bool = True


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Persist a snapshot (:meth:`LogStorage.install_snapshot`)."""

    seq: int
    snapshot: Snapshot


Write = SetMeta | PutEntries | InstallSnapshot


def perform_writes(storage: LogStorage, writes: Sequence[Write]) -> None:
    """Perform ``writes`` on ``storage`` in order; on return every one of them is durable.

    Consecutive :class:`PutEntries` go down as one ``put_entries`` call (one commit, one fsync;
    a later entry at a position replaces an earlier one, as separate calls would), synced if any
    of them asks for it. Meta and snapshot writes keep their place between them.

    Raises:
        StorageFailure: A write or an fsync failed (and whatever the storage raises besides).
    """
    run: dict[int, Entry] = {}
    sync = False
    for write in writes:
        if isinstance(write, PutEntries):
            for e in write.entries:
                run.pop(e.position, None)
                run[e.position] = e
            sync = sync or write.sync
            continue
        if run:
            storage.put_entries(list(run.values()), sync=sync)
            run, sync = {}, False
        if isinstance(write, SetMeta):
            storage.set_meta(write.status, write.promised)
        else:
            storage.install_snapshot(write.snapshot)
    if run:
        storage.put_entries(list(run.values()), sync=sync)
