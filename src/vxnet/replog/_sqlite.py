"""A replica's log on a SQLite file: the production :class:`~._logstore.LogStorage`.

Rules:

* One file per replica, in WAL journal mode with ``synchronous=FULL``: a commit returns only after
  the WAL is fsynced, so every mutating call is one transaction and durable on return.
* The file is locked exclusively while open (``locking_mode=EXCLUSIVE``): a second replica, or a
  second process, opening the same log fails instead of sharing it.
* Every row carries a CRC32 of its fields (``zlib.crc32`` over a fixed encoding, tagged by table).
  ``load`` checks every row, leaves out any row that fails (wrong checksum, wrong type, unknown
  status) and sets ``Durable.corrupt``. A bad row stays on disk until a later write replaces it
  (``set_meta``, ``put_entries`` at its position, ``install_snapshot`` above it).
* The file is ours only if it is new, empty, or marked with our ``application_id``: anything else
  (not SQLite at all, another application's database) raises :class:`StorageFailure` and is left
  untouched.
* Calls may come from any thread (the server performs them in a worker thread), one at a time.
* Any SQLite error while writing or committing raises :class:`StorageFailure` naming the file and
  the call. The failure is sticky: every later mutating call raises too, because after a failed
  fsync the page cache can no longer be trusted (retrying an fsync can "succeed" without the data).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Final

from vxnet.replog._storage import (
    Durable,
    Entry,
    ReplicaStatus,
    Snapshot,
    StorageFailure,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["SqliteLogStorage"]

APPLICATION_ID: Final = 0x76786C67  # "vxlg" in the SQLite header: this file is a vxnet replica log
SCHEMA_VERSION: Final = 1  # PRAGMA user_version
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_INT64_MAX: Final = 2**63 - 1
_STATUSES: Final = frozenset(s.value for s in ReplicaStatus)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    status INTEGER NOT NULL,
    promised INTEGER NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    position INTEGER PRIMARY KEY,
    ballot INTEGER NOT NULL,
    value BLOB NOT NULL,
    chosen INTEGER NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    position INTEGER NOT NULL,
    data BLOB NOT NULL,
    crc INTEGER NOT NULL
);
"""


def meta_crc(status: int, promised: int) -> int:
    """The checksum stored beside a meta row."""
    return zlib.crc32(b"M" + struct.pack(">qq", status, promised))


def entry_crc(position: int, ballot: int, value: bytes, chosen: bool) -> int:
    """The checksum stored beside an entries row."""
    return zlib.crc32(b"E" + struct.pack(">qq?", position, ballot, chosen) + value)


def snapshot_crc(position: int, data: bytes) -> int:
    """The checksum stored beside the snapshot row."""
    return zlib.crc32(b"S" + struct.pack(">q", position) + data)


def _check_int64(name: str, value: int) -> None:
    if not 0 <= value <= _INT64_MAX:
        raise ValueError(f"{name} must be in [0, 2**63), got {value}")


class SqliteLogStorage:
    """A replica's durable state in one SQLite file.

    Args:
        path: The database file; missing parent directories are created.

    Raises:
        StorageFailure: The file is not a vxnet replica log, is locked by another opener, or
            cannot be created or initialised.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._failed: StorageFailure | None = None
        self._closed = False
        self._conn = self._open()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def _open(self) -> sqlite3.Connection:
        path = self._path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            is_new = not path.exists()
            if not is_new and path.stat().st_size > 0:
                with path.open("rb") as f:
                    header = f.read(len(_SQLITE_MAGIC))
                if header != _SQLITE_MAGIC:
                    raise StorageFailure(
                        f"{path}: not a SQLite database; refusing to use it as a replica log"
                    )
        except OSError as exc:
            raise StorageFailure(f"{path}: open failed: {exc}") from exc
        try:
            # The driver calls from a worker thread, one call at a time: the connection may
            # move between threads, never be shared by two at once.
            conn = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageFailure(f"{path}: open failed: {exc}") from exc
        try:
            self._initialise(conn)
            if is_new:
                _fsync_directory(path.parent)
        except BaseException:
            conn.close()
            raise
        return conn

    def _initialise(self, conn: sqlite3.Connection) -> None:
        path = self._path
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")  # before WAL: no shared memory index
            (app_id,) = conn.execute("PRAGMA application_id").fetchone()
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise StorageFailure(
                    f"{path}: in use by another replica or process (locked); refusing to share it"
                ) from exc
            raise StorageFailure(f"{path}: cannot read the database: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageFailure(f"{path}: cannot read the database: {exc}") from exc
        if app_id != APPLICATION_ID and (app_id != 0 or tables != 0):
            raise StorageFailure(
                f"{path}: a SQLite database but not a vxnet replica log "
                f"(application_id={app_id:#x}, {tables} schema objects); refusing to use it"
            )
        if version > SCHEMA_VERSION:
            raise StorageFailure(
                f"{path}: replica log schema version {version} is newer than {SCHEMA_VERSION}"
            )
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode != "wal":
                raise StorageFailure(f"{path}: cannot switch to WAL journal mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StorageFailure(f"{path}: initialise failed: {exc}") from exc

    def load(self) -> Durable:
        """Everything durable, minus rows whose checksum fails (then ``corrupt`` is set).

        Raises:
            StorageFailure: SQLite cannot read the file (for example a damaged b-tree).
        """
        self._check_open()
        durable = Durable()
        try:
            meta = self._conn.execute("SELECT status, promised, crc FROM meta").fetchall()
            snap = self._conn.execute("SELECT position, data, crc FROM snapshot").fetchall()
            rows = self._conn.execute(
                "SELECT position, ballot, value, chosen, crc FROM entries ORDER BY position"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StorageFailure(f"{self._path}: load failed: {exc}") from exc
        for status, promised, crc in meta:
            if (
                _ints(status, promised, crc)
                and status in _STATUSES
                and crc == meta_crc(status, promised)
            ):
                durable.status = ReplicaStatus(status)
                durable.promised = promised
            else:
                durable.corrupt = True
        for position, data, crc in snap:
            if _ints(position, crc) and type(data) is bytes and crc == snapshot_crc(position, data):
                durable.snapshot = Snapshot(position, data)
            else:
                durable.corrupt = True
        for position, ballot, value, chosen, crc in rows:
            if (
                _ints(position, ballot, chosen, crc)
                and type(value) is bytes
                and chosen in (0, 1)
                and crc == entry_crc(position, ballot, value, bool(chosen))
            ):
                durable.entries[position] = Entry(position, ballot, value, bool(chosen))
            else:
                durable.corrupt = True
        return durable

    def set_meta(self, status: ReplicaStatus, promised: int) -> None:
        """Persist the status and the promised proposal number.

        Raises:
            StorageFailure: The write or the commit (fsync) failed, now or earlier.
            ValueError: ``promised`` does not fit a signed 64-bit integer.
        """
        _check_int64("promised", promised)
        status = ReplicaStatus(status)
        self._transaction(
            "set_meta",
            [
                (
                    "INSERT OR REPLACE INTO meta (id, status, promised, crc) VALUES (0, ?, ?, ?)",
                    [(int(status), promised, meta_crc(status, promised))],
                )
            ],
        )

    def put_entries(self, entries: Sequence[Entry], *, sync: bool = True) -> None:
        """Persist entries (insert or replace by position), atomically.

        With ``sync=False`` the commit is not fsynced (``synchronous=NORMAL`` for this
        transaction): the WAL keeps the order, so the next synced commit makes it durable too.

        Raises:
            StorageFailure: The write or the commit (fsync) failed, now or earlier; nothing of
                ``entries`` is durable.
            ValueError: A position or ballot does not fit a signed 64-bit integer.
        """
        for e in entries:
            _check_int64("position", e.position)
            _check_int64("ballot", e.ballot)
        rows = [
            (
                e.position,
                e.ballot,
                bytes(e.value),
                int(e.chosen),
                entry_crc(e.position, e.ballot, e.value, e.chosen),
            )
            for e in entries
        ]
        # One statement per chunk of rows, all of its values bound at once: the worker thread
        # that writes then gives up and takes back the GIL twice per batch (prepare, step),
        # not at every row, so the event loop it runs beside is not held up at each handover.
        statements = []
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            placeholders = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))  # only "?"s: no values
            sql = _PUT_ENTRIES + placeholders
            statements.append((sql, [tuple(v for row in chunk for v in row)]))
        self._transaction("put_entries", sync=sync, statements=statements)

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Persist a snapshot and drop every entry below its position, in one transaction.

        Raises:
            StorageFailure: The write or the commit (fsync) failed, now or earlier.
            ValueError: The position does not fit a signed 64-bit integer.
        """
        _check_int64("position", snapshot.position)
        data = bytes(snapshot.data)
        self._transaction(
            "install_snapshot",
            [
                (
                    "INSERT OR REPLACE INTO snapshot (id, position, data, crc) VALUES (0, ?, ?, ?)",
                    [(snapshot.position, data, snapshot_crc(snapshot.position, data))],
                ),
                ("DELETE FROM entries WHERE position < ?", [(snapshot.position,)]),
            ],
        )

    def close(self) -> None:
        """Checkpoint and close the file, releasing its lock; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            raise StorageFailure(f"{self._path}: close failed: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self._path}: the replica log is closed")

    def _transaction(
        self,
        operation: str,
        statements: Sequence[tuple[str, Sequence[tuple[object, ...]]]],
        *,
        sync: bool = True,
    ) -> None:
        self._check_open()
        if self._failed is not None:
            raise StorageFailure(
                f"{self._path}: {operation} refused: an earlier write failed"
            ) from self._failed
        try:
            if not sync:
                self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                if len(statements) == 1 and len(statements[0][1]) == 1:
                    # One statement is its own transaction (autocommit), as atomic.
                    self._conn.execute(statements[0][0], statements[0][1][0])
                else:
                    self._conn.execute("BEGIN IMMEDIATE")
                    for sql, params in statements:
                        self._conn.executemany(sql, params)
                    self._conn.execute("COMMIT")
            finally:
                if not sync:
                    self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            _rollback(self._conn)
            self._failed = StorageFailure(f"{self._path}: {operation} failed: {exc}")
            raise self._failed from exc


_PUT_ENTRIES = "INSERT OR REPLACE INTO entries (position, ballot, value, chosen, crc) VALUES "
_ROWS_PER_STATEMENT = 199  # 5 values a row, within SQLite's lowest limit of 999 variables


def _ints(*values: object) -> bool:
    return all(type(v) is int for v in values)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable (SQLite syncs the file, not its directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise StorageFailure(f"{directory}: cannot open the directory to fsync: {exc}") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise StorageFailure(f"{directory}: directory fsync failed: {exc}") from exc
    finally:
        os.close(fd)
