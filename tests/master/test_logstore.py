"""The replica's disk: one contract for SQLite and the simulated disk, then each one's faults."""

from __future__ import annotations

import random
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxnet.replog._sqlite import SqliteLogStorage
from vxnet.replog._storage import (
    Durable,
    Entry,
    LogStorage,
    ReplicaStatus,
    Snapshot,
    StorageFailure,
)
from vxnet.testing.simdisk import CRASH_POINTS, CrashPoint, SimCrash, SimDisk

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

VOTING = ReplicaStatus.VOTING
RECOVERING = ReplicaStatus.RECOVERING


def entries(*positions: int, ballot: int = 1) -> list[Entry]:
    return [Entry(p, ballot, f"value-{p}".encode()) for p in positions]


# --- the contract, against both implementations ----------------------------------------------


@dataclass
class Disk:
    """How a test opens (or, after a restart, reopens) one replica's disk."""

    kind: str
    open: Callable[[], LogStorage]
    break_long_values: Callable[[LogStorage], None]  # the next write of a 64+ byte value fails


def _sqlite_break(store: LogStorage) -> None:
    assert isinstance(store, SqliteLogStorage)
    store._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 64)


def _sim_break(store: LogStorage) -> None:
    assert isinstance(store, SimDisk)
    store.fail_next_sync()


@pytest.fixture(params=["sqlite", "simdisk"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Disk]:
    opened: list[LogStorage] = []
    if request.param == "sqlite":
        path = tmp_path / "replica" / "log.db"

        def open_sqlite() -> LogStorage:
            opened.append(SqliteLogStorage(path))
            return opened[-1]

        yield Disk("sqlite", open_sqlite, _sqlite_break)
    else:
        sim = SimDisk()

        def open_sim() -> LogStorage:
            opened.append(sim)
            return sim

        yield Disk("simdisk", open_sim, _sim_break)
    for store in opened:
        store.close()


def test_a_new_disk_is_empty(disk: Disk) -> None:
    assert disk.open().load() == Durable()


def test_meta_round_trip_and_replace(disk: Disk) -> None:
    store = disk.open()
    store.set_meta(RECOVERING, 3)
    assert (store.load().status, store.load().promised) == (RECOVERING, 3)
    store.set_meta(VOTING, 7)
    store.close()
    loaded = disk.open().load()
    assert (loaded.status, loaded.promised, loaded.corrupt) == (VOTING, 7, False)


def test_entries_replace_by_position(disk: Disk) -> None:
    store = disk.open()
    store.put_entries(entries(0, 1, 2))
    store.put_entries([Entry(1, 5, b"", chosen=True), Entry(4, 5, b"\x00\xff")])
    expected = {
        0: Entry(0, 1, b"value-0"),
        1: Entry(1, 5, b"", chosen=True),
        2: Entry(2, 1, b"value-2"),
        4: Entry(4, 5, b"\x00\xff"),
    }
    assert store.load().entries == expected
    store.close()
    assert disk.open().load().entries == expected


def test_the_last_of_a_position_in_one_batch_wins(disk: Disk) -> None:
    store = disk.open()
    store.put_entries([Entry(3, 1, b"a"), Entry(3, 2, b"b")])
    assert store.load().entries == {3: Entry(3, 2, b"b")}


def test_snapshot_truncates_below_its_position(disk: Disk) -> None:
    store = disk.open()
    store.put_entries(entries(*range(10)))
    store.install_snapshot(Snapshot(5, b"state@5"))
    loaded = store.load()
    assert loaded.snapshot == Snapshot(5, b"state@5")
    assert sorted(loaded.entries) == [5, 6, 7, 8, 9]
    store.install_snapshot(Snapshot(8, b"state@8"))
    store.close()
    loaded = disk.open().load()
    assert loaded.snapshot == Snapshot(8, b"state@8")
    assert loaded.entries == {8: entries(8)[0], 9: entries(9)[0]}


def test_everything_survives_a_reopen(disk: Disk) -> None:
    store = disk.open()
    store.set_meta(VOTING, 42)
    store.put_entries(entries(3, 4, 5, ballot=42))
    store.install_snapshot(Snapshot(4, b"snap"))
    store.close()
    assert disk.open().load() == Durable(
        status=VOTING,
        promised=42,
        snapshot=Snapshot(4, b"snap"),
        entries={4: Entry(4, 42, b"value-4"), 5: Entry(5, 42, b"value-5")},
    )


def test_unsynced_entries_become_durable_with_the_next_synced_call(disk: Disk) -> None:
    store = disk.open()
    store.put_entries(entries(0, 1))
    store.put_entries([Entry(0, 1, b"value-0", chosen=True)], sync=False)
    store.set_meta(VOTING, 3)
    store.close()
    loaded = disk.open().load()
    assert loaded.entries[0].chosen
    assert not loaded.entries[1].chosen


def test_put_entries_is_atomic_when_the_write_fails(disk: Disk) -> None:
    store = disk.open()
    store.put_entries(entries(0, 1))
    disk.break_long_values(store)
    batch = [Entry(1, 9, b"new"), Entry(2, 9, b"new"), Entry(3, 9, b"x" * 100)]
    with pytest.raises(StorageFailure):
        store.put_entries(batch)
    assert store.load().entries == dict(enumerate(entries(0, 1)))


def test_a_batch_larger_than_one_statement_is_written_whole_or_not_at_all(disk: Disk) -> None:
    store = disk.open()
    batch = entries(*range(450), ballot=3)  # more rows than one INSERT statement carries
    store.put_entries(batch)
    store.close()
    store = disk.open()
    assert store.load().entries == {e.position: e for e in batch}
    disk.break_long_values(store)
    again = [Entry(p, 4, b"new") for p in range(449)] + [Entry(449, 4, b"x" * 100)]
    with pytest.raises(StorageFailure):
        store.put_entries(again)
    assert store.load().entries == {e.position: e for e in batch}


@pytest.mark.parametrize("bad_entry", [Entry(-1, 1, b""), Entry(0, -1, b""), Entry(0, 2**63, b"")])
def test_out_of_range_numbers_are_refused_before_writing(disk: Disk, bad_entry: Entry) -> None:
    store = disk.open()
    with pytest.raises(ValueError, match="must be in"):
        store.put_entries([Entry(7, 1, b"ok"), bad_entry])
    with pytest.raises(ValueError, match="promised"):
        store.set_meta(VOTING, -1)
    assert store.load() == Durable()


def test_load_returns_copies(disk: Disk) -> None:
    store = disk.open()
    store.put_entries(entries(0))
    first = store.load()
    first.entries.clear()
    first.status = VOTING
    assert store.load().entries == dict(enumerate(entries(0)))
    assert store.load().status is ReplicaStatus.EMPTY


# --- SQLite ----------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A replica log holding meta, a snapshot at 2 and entries 2..5; closed."""
    path = tmp_path / "log.db"
    store = SqliteLogStorage(path)
    store.set_meta(VOTING, 9)
    store.put_entries(entries(0, 1, 2, 3, 4, 5, ballot=9))
    store.install_snapshot(Snapshot(2, b"snapshot-data"))
    store.close()
    return path


def _poke(path: Path, sql: str) -> None:
    """Change the file behind the store's back, as a bad disk or a careless operator would."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            assert conn.execute(sql).rowcount == 1
    finally:
        conn.close()


def _load(path: Path) -> Durable:
    store = SqliteLogStorage(path)
    try:
        return store.load()
    finally:
        store.close()


def test_sqlite_uses_wal_with_full_sync(db: Path) -> None:
    store = SqliteLogStorage(db)
    try:
        assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        store.close()


def test_sqlite_an_unsynced_write_leaves_full_sync_on(db: Path) -> None:
    store = SqliteLogStorage(db)
    try:
        store.put_entries(entries(99), sync=False)
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL again
        assert store.load().entries[99] == entries(99)[0]
    finally:
        store.close()


def test_sqlite_a_corrupt_entry_is_left_out_and_flagged(db: Path) -> None:
    _poke(db, "UPDATE entries SET value = X'6576696C' WHERE position = 4")
    loaded = _load(db)
    assert loaded.corrupt
    assert sorted(loaded.entries) == [2, 3, 5]
    assert (loaded.status, loaded.promised, loaded.snapshot) == (
        VOTING,
        9,
        Snapshot(2, b"snapshot-data"),
    )
    store = SqliteLogStorage(db)  # catching up rewrites the position: the log is whole again
    store.put_entries([Entry(4, 10, b"learned", chosen=True)])
    store.close()
    assert not _load(db).corrupt


@pytest.mark.parametrize(
    ("sql", "lost"),
    [
        ("UPDATE meta SET promised = 8", "meta"),
        ("UPDATE meta SET status = 7, crc = 0", "meta"),
        ("UPDATE snapshot SET data = X'00'", "snapshot"),
        ("UPDATE entries SET chosen = 1 WHERE position = 3", "entry"),
        ("UPDATE entries SET value = 'text' WHERE position = 3", "entry"),
        ("UPDATE entries SET ballot = 'nine' WHERE position = 3", "entry"),
    ],
)
def test_sqlite_each_kind_of_corrupt_row_is_left_out(db: Path, sql: str, lost: str) -> None:
    _poke(db, sql)
    loaded = _load(db)
    assert loaded.corrupt
    assert (loaded.status, loaded.promised) == (
        (ReplicaStatus.EMPTY, 0) if lost == "meta" else (VOTING, 9)
    )
    assert loaded.snapshot == (None if lost == "snapshot" else Snapshot(2, b"snapshot-data"))
    assert sorted(loaded.entries) == ([2, 4, 5] if lost == "entry" else [2, 3, 4, 5])


def test_sqlite_a_flipped_byte_in_the_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = SqliteLogStorage(path)
    marker = b"MARKER-" + bytes(range(32))
    store.put_entries([Entry(0, 1, b"plain"), Entry(1, 1, marker), Entry(2, 1, b"plain")])
    store.close()  # checkpoints the WAL into the file
    raw = bytearray(path.read_bytes())
    at = raw.index(marker)
    raw[at + 10] ^= 0x01
    path.write_bytes(bytes(raw))
    loaded = _load(path)
    assert loaded.corrupt
    assert sorted(loaded.entries) == [0, 2]


def test_sqlite_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "log.db"
    SqliteLogStorage(path).close()
    assert path.is_file()


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    content = b"someone's notes, not a database\n" * 100
    path.write_bytes(content)
    with pytest.raises(StorageFailure, match="not a SQLite database"):
        SqliteLogStorage(path)
    assert path.read_bytes() == content


def test_sqlite_refuses_another_applications_database(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    _conn = sqlite3.connect(path)
    with _conn:
        _conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    _conn.close()
    before = path.read_bytes()
    with pytest.raises(StorageFailure, match="not a vxnet replica log"):
        SqliteLogStorage(path)
    assert path.read_bytes() == before


def test_sqlite_one_opener_at_a_time(db: Path) -> None:
    store = SqliteLogStorage(db)
    with pytest.raises(StorageFailure, match="locked"):
        SqliteLogStorage(db)
    store.close()
    assert _load(db).promised == 9


def test_sqlite_a_failed_write_names_the_file_and_call_and_sticks(db: Path) -> None:
    store = SqliteLogStorage(db)
    try:
        _sqlite_break(store)
        with pytest.raises(StorageFailure, match=r"log\.db: put_entries failed") as info:
            store.put_entries([Entry(9, 9, b"y" * 100)])
        assert isinstance(info.value.__cause__, sqlite3.Error)
        with pytest.raises(StorageFailure, match="set_meta refused: an earlier write failed"):
            store.set_meta(VOTING, 10)
    finally:
        store.close()
    assert _load(db).promised == 9


def test_sqlite_closed_store_refuses_calls(db: Path) -> None:
    store = SqliteLogStorage(db)
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.load()


# --- SimDisk: crash points, torn writes, wipes, failed fsyncs --------------------------------


def crash_at(point: CrashPoint) -> Callable[[CrashPoint], bool]:
    return lambda p: p == point


def test_simdisk_asks_the_hook_at_every_point_in_order() -> None:
    seen: list[str] = []

    def hook(point: CrashPoint) -> bool:
        seen.append(point)
        return False

    disk = SimDisk(crash_hook=hook)
    disk.set_meta(VOTING, 1)
    disk.put_entries([])
    assert seen == list(CRASH_POINTS) * 2


@pytest.mark.parametrize("point", ["before-write", "after-write"])
def test_simdisk_a_crash_before_the_sync_loses_the_call(point: CrashPoint) -> None:
    armed = False
    disk = SimDisk(crash_hook=lambda p: armed and p == point, torn=lambda: False)
    disk.set_meta(VOTING, 1)
    disk.put_entries(entries(0, 1))
    before = disk.load()
    armed = True
    calls: list[Callable[[], None]] = [
        lambda: disk.set_meta(RECOVERING, 2),
        lambda: disk.put_entries(entries(1, 2, 3, ballot=2)),
        lambda: disk.install_snapshot(Snapshot(1, b"s")),
    ]
    for call in calls:
        with pytest.raises(SimCrash) as info:
            call()
        assert info.value.point == point
        assert disk.load() == before


def test_simdisk_unsynced_writes_are_lost_by_a_restart_or_a_crash_before_the_next_sync() -> None:
    armed = False
    disk = SimDisk(crash_hook=lambda p: armed and p == "after-write")
    disk.put_entries(entries(0))
    disk.put_entries(entries(1), sync=False)
    assert disk.load() == Durable(entries={0: entries(0)[0]})  # a restart
    disk.put_entries(entries(2), sync=False)
    armed = True
    with pytest.raises(SimCrash):
        disk.set_meta(VOTING, 1)
    assert disk.load() == Durable(entries={0: entries(0)[0]})
    armed = False
    disk.put_entries(entries(3), sync=False)
    disk.set_meta(VOTING, 1)
    assert set(disk.load().entries) == {0, 3}


def test_simdisk_an_unsynced_write_can_crash_before_it_is_written() -> None:
    disk = SimDisk(crash_hook=crash_at("before-write"))
    with pytest.raises(SimCrash):
        disk.put_entries(entries(0), sync=False)
    assert disk.load() == Durable()


def test_simdisk_a_crash_after_the_sync_keeps_the_call() -> None:
    disk = SimDisk(crash_hook=crash_at("after-sync"))
    with pytest.raises(SimCrash):
        disk.put_entries(entries(0, 1))
    with pytest.raises(SimCrash):
        disk.install_snapshot(Snapshot(1, b"s"))
    assert disk.load() == Durable(snapshot=Snapshot(1, b"s"), entries={1: entries(1)[0]})


def test_simdisk_a_torn_write_is_detected_and_spares_earlier_state() -> None:
    armed = False
    disk = SimDisk(crash_hook=lambda p: armed and p == "after-write", torn=lambda: True)
    disk.put_entries(entries(0, 1, 2))
    armed = True
    with pytest.raises(SimCrash):
        disk.put_entries(entries(1, 2, 3, ballot=2))  # 3 torn, 1 and 2 lost
    loaded = disk.load()
    assert loaded.torn_tail
    assert not loaded.corrupt  # the torn call never returned: nothing depended on it
    assert loaded.entries == dict(enumerate(entries(0, 1, 2)))
    with pytest.raises(SimCrash):
        disk.put_entries(entries(2, ballot=3))  # the old 2 survives its torn replacement
    assert disk.load().entries == dict(enumerate(entries(0, 1, 2)))
    armed = False
    disk.put_entries(entries(2, 3, ballot=4))  # superseded: the disk is clean again
    assert not disk.load().torn_tail


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.set_meta(VOTING, 5),
        lambda d: d.install_snapshot(Snapshot(3, b"snap")),
    ],
)
def test_simdisk_tears_meta_and_snapshot_too(call: Callable[[SimDisk], None]) -> None:
    disk = SimDisk(crash_hook=crash_at("after-write"), torn=lambda: True)
    with pytest.raises(SimCrash):
        call(disk)
    assert disk.load() == Durable(torn_tail=True)


def test_simdisk_a_snapshot_clears_torn_entries_below_it() -> None:
    armed = True
    disk = SimDisk(crash_hook=lambda p: armed and p == "after-write", torn=lambda: True)
    with pytest.raises(SimCrash):
        disk.put_entries(entries(4))
    armed = False
    disk.install_snapshot(Snapshot(5, b""))
    assert disk.load() == Durable(snapshot=Snapshot(5, b""))


def test_simdisk_tears_by_a_seeded_coin() -> None:
    def outcomes(seed: int) -> list[bool]:
        disk = SimDisk(crash_hook=crash_at("after-write"), torn=random.Random(seed))
        result = []
        for p in range(40):
            with pytest.raises(SimCrash):
                disk.put_entries(entries(p))
            result.append(disk.load().torn_tail)
            disk.wipe()
        return result

    assert outcomes(1) == outcomes(1)
    assert True in outcomes(1)
    assert False in outcomes(1)


def test_simdisk_wipe_loses_everything() -> None:
    disk = SimDisk()
    disk.set_meta(VOTING, 3)
    disk.put_entries(entries(0))
    disk.install_snapshot(Snapshot(0, b"s"))
    disk.wipe()
    assert disk.load() == Durable()


def test_simdisk_fail_next_sync_fails_once_and_drops_the_call() -> None:
    disk = SimDisk()
    disk.put_entries(entries(0))
    disk.fail_next_sync()
    with pytest.raises(StorageFailure, match="fsync"):
        disk.put_entries(entries(0, 1, ballot=2))
    assert disk.load() == Durable(entries=dict(enumerate(entries(0))))
    disk.put_entries(entries(1))
    assert sorted(disk.load().entries) == [0, 1]


# --- random operations with crashes at random points -----------------------------------------

Op: TypeAlias = (
    tuple[Literal["meta"], ReplicaStatus, int]
    | tuple[Literal["put"], list[Entry]]
    | tuple[Literal["snapshot"], Snapshot]
    | tuple[Literal["wipe"]]
    | tuple[Literal["reopen"]]
)

entry_st = st.builds(
    Entry,
    position=st.integers(0, 12),
    ballot=st.integers(0, 5),
    value=st.binary(max_size=6),
    chosen=st.booleans(),
)
op_st: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("meta"), st.sampled_from(ReplicaStatus), st.integers(0, 2**63 - 1)),
    st.tuples(st.just("put"), st.lists(entry_st, max_size=4)),
    st.tuples(st.just("snapshot"), st.builds(Snapshot, st.integers(0, 12), st.binary(max_size=6))),
    st.tuples(st.just("wipe")),
    st.tuples(st.just("reopen")),
)


@dataclass
class Model:
    """What the disk must hold: the effects of every call that reached its fsync."""

    status: ReplicaStatus = ReplicaStatus.EMPTY
    promised: int = 0
    snapshot: Snapshot | None = None
    entries: dict[int, Entry] = field(default_factory=dict)
    torn: set[tuple[str, int]] = field(default_factory=set)  # torn records not yet superseded

    def apply(self, op: Op) -> None:
        if op[0] == "meta":
            self.status, self.promised = op[1], op[2]
            self.torn.discard(("meta", 0))
        elif op[0] == "put":
            for e in op[1]:
                self.entries[e.position] = e
                self.torn.discard(("entry", e.position))
        elif op[0] == "snapshot":
            self.snapshot = op[1]
            self.entries = {p: e for p, e in self.entries.items() if p >= op[1].position}
            self.torn = {k for k in self.torn if k[0] != "entry" or k[1] >= op[1].position}
            self.torn.discard(("snapshot", 0))
        elif op[0] == "wipe":
            self.status, self.promised, self.snapshot = ReplicaStatus.EMPTY, 0, None
            self.entries, self.torn = {}, set()

    def last_record(self, op: Op) -> tuple[str, int] | None:
        if op[0] == "meta":
            return ("meta", 0)
        if op[0] == "put":
            return ("entry", op[1][-1].position) if op[1] else None
        if op[0] == "snapshot":
            return ("snapshot", 0)
        return None

    def durable(self) -> Durable:
        return Durable(
            self.status, self.promised, self.snapshot, dict(self.entries), torn_tail=bool(self.torn)
        )


def run(store: LogStorage, op: Op) -> None:
    if op[0] == "meta":
        store.set_meta(op[1], op[2])
    elif op[0] == "put":
        store.put_entries(op[1])
    elif op[0] == "snapshot":
        store.install_snapshot(op[1])


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(op_st, st.sampled_from([None, *CRASH_POINTS]), st.booleans()),
        max_size=30,
    )
)
def test_simdisk_after_any_crash_load_is_exactly_what_was_synced(
    plan: list[tuple[Op, CrashPoint | None, bool]],
) -> None:
    crash: list[CrashPoint | None] = [None]
    tear = [False]
    disk = SimDisk(crash_hook=lambda p: p == crash[0], torn=lambda: tear[0])
    model = Model()
    for op, point, torn in plan:
        crash[0], tear[0] = point, torn
        if op[0] == "wipe":
            disk.wipe()
        elif point is None or op[0] == "reopen":
            run(disk, op)
        else:
            with pytest.raises(SimCrash):
                run(disk, op)
        if point in (None, "after-sync") or op[0] in ("wipe", "reopen"):
            model.apply(op)
        elif point == "after-write" and torn and (key := model.last_record(op)) is not None:
            model.torn.add(key)
        assert disk.load() == model.durable()


@settings(max_examples=15, deadline=None)
@given(st.lists(op_st, max_size=25))
def test_sqlite_random_operations_match_the_model(ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.db"
        store = SqliteLogStorage(path)
        model = Model()
        try:
            for op in ops:
                if op[0] == "wipe":
                    store.close()
                    path.unlink()
                    store = SqliteLogStorage(path)
                elif op[0] == "reopen":
                    store.close()
                    store = SqliteLogStorage(path)
                else:
                    run(store, op)
                model.apply(op)
                assert store.load() == model.durable()
        finally:
            store.close()


@pytest.mark.parametrize(("kind", "position"), [("meta", 0), ("entry", 1), ("snapshot", 0)])
def test_simdisk_rot_of_synced_records_is_flagged_corrupt(kind: str, position: int) -> None:
    disk = SimDisk()
    disk.set_meta(VOTING, 3)
    disk.install_snapshot(Snapshot(1, b"state"))
    disk.put_entries(entries(1, 2))
    assert disk.rot(kind, position)
    loaded = disk.load()
    assert loaded.corrupt
    assert not loaded.torn_tail
    assert not disk.rot("entry", 99)
