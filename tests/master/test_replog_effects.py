"""The replicated log's disk writes are effects: the core asks for them, the drivers perform them.

The core holds a message until the writes it depends on are reported done and hands out writes
in order; the simulator survives losing every replica's writes under way at once (and catches a
core that answers early); the trio server performs writes off the event loop.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from vxnet.replog._client import request_once
from vxnet.replog._core import (
    Accept,
    Accepted,
    AppendDone,
    Applied,
    LogTiming,
    Prepare,
    Promise,
    RecoverRequest,
    RecoverResponse,
    Replica,
    Role,
    make_ballot,
)
from vxnet.replog._server import ReplicatedLog
from vxnet.replog._sqlite import SqliteLogStorage
from vxnet.replog._storage import (
    Durable,
    Entry,
    InstallSnapshot,
    PutEntries,
    ReplicaStatus,
    SetMeta,
    Snapshot,
    perform_writes,
)
from vxnet.replog._wire import (
    FrameReader,
    decode_hello,
    decode_message,
    encode_frame,
    encode_message,
    peer_hello,
)
from vxnet.testing import logsim
from vxnet.testing.logsim import LogSim
from vxnet.testing.procs import free_ports

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from vxnet.replog._core import Message

VOTING = ReplicaStatus.VOTING
QUIET = LogTiming(election=100.0)  # no election of its own during a unit test


def replica(
    replica_id: int = 0, n: int = 3, durable: Durable | None = None, timing: LogTiming = QUIET
) -> Replica:
    return Replica(
        replica_id,
        n,
        durable if durable is not None else Durable(status=VOTING),
        rng=random.Random(0),
        now=0.0,
        timing=timing,
    )


def role(r: Replica) -> Role:
    return r.role  # read afresh: the calls between change it


# --- the core --------------------------------------------------------------------------------


def test_an_accepted_leaves_only_after_the_promise_and_the_entries_are_durable() -> None:
    r = replica()
    ballot = make_ballot(1, 1)
    r.receive(1, Accept(ballot, ((0, b"a"), (1, b"b")), 0), 1.0)
    assert r.promised == ballot  # memory is updated at once
    assert r.writes_to_perform() == [
        SetMeta(1, VOTING, ballot),
        PutEntries(2, (Entry(0, ballot, b"a"), Entry(1, ballot, b"b")), True),
    ]
    assert r.writes_to_perform() == []
    assert r.messages_to_send() == []
    r.write_done(1, 1.0)
    assert r.messages_to_send() == []  # the entries are not durable yet
    r.write_done(2, 1.0)
    assert r.messages_to_send() == [(1, Accepted(ballot, (0, 1)))]
    assert r.messages_to_send() == []


def test_a_promise_leaves_only_after_it_is_durable() -> None:
    r = replica()
    ballot = make_ballot(3, 2)
    r.receive(2, Prepare(ballot, 0), 1.0)
    assert r.writes_to_perform() == [SetMeta(1, VOTING, ballot)]
    r.receive(1, RecoverRequest(), 1.0)  # asked meanwhile: it reports the promise, so it waits
    assert r.messages_to_send() == []
    assert r.writes_pending() == 1
    r.write_done(1, 1.0)
    assert r.writes_pending() == 0
    assert r.messages_to_send() == [
        (2, Promise(ballot, (), 0)),
        (1, RecoverResponse(VOTING, ballot, 0, 0)),
    ]


def test_what_depends_on_no_write_leaves_at_once() -> None:
    r = replica()
    r.receive(1, RecoverRequest(), 1.0)
    assert r.writes_to_perform() == []
    assert r.messages_to_send() == [(1, RecoverResponse(VOTING, 0, 0, 0))]


def test_writes_come_out_in_order_and_each_releases_its_own_answer() -> None:
    r = replica()
    ballot = make_ballot(1, 1)
    r.receive(1, Accept(ballot, ((0, b"a"),), 0), 1.0)
    first = r.writes_to_perform()
    r.receive(1, Accept(ballot, ((1, b"b"),), 0), 1.0)
    r.receive(1, Accept(ballot, ((2, b"c"),), 0), 1.0)
    rest = r.writes_to_perform()
    assert [w.seq for w in first + rest] == [1, 2, 3, 4]
    assert [type(w) for w in first + rest] == [SetMeta, PutEntries, PutEntries, PutEntries]
    assert [w.entries[0].position for w in rest if isinstance(w, PutEntries)] == [1, 2]
    r.write_done(2, 1.0)
    assert r.messages_to_send() == [(1, Accepted(ballot, (0,)))]
    r.write_done(3, 1.0)
    assert r.messages_to_send() == [(1, Accepted(ballot, (1,)))]
    r.write_done(4, 1.0)
    assert r.messages_to_send() == [(1, Accepted(ballot, (2,)))]
    with pytest.raises(ValueError, match="never asked for"):
        r.write_done(5, 1.0)


def elect(r: Replica, now: float) -> None:
    """Make ``r`` (replica 0 of 3, a fresh voter) coordinator with peer 1's promise."""
    r.tick(now)
    assert role(r) is Role.CANDIDATE
    [write] = r.writes_to_perform()
    assert isinstance(write, SetMeta)
    assert r.messages_to_send() == []  # the prepare waits for the candidate's own promise
    r.write_done(write.seq, now)
    assert [type(m) for _, m in r.messages_to_send()] == [Prepare, Prepare]
    r.receive(1, Promise(r.promised, (), 0), now)
    assert role(r) is Role.COORDINATOR


def test_a_coordinator_counts_its_own_acceptance_only_once_durable() -> None:
    r = replica(timing=LogTiming())
    elect(r, 10.0)
    r.append(7, b"x", 10.0)
    [write] = r.writes_to_perform()
    assert write == PutEntries(write.seq, (Entry(0, r.promised, b"x"),), True)
    # The accept depends on the promise only: it goes out while our own copy is written.
    assert r.messages_to_send() == [(p, Accept(r.promised, ((0, b"x"),), 0)) for p in (1, 2)]
    r.receive(1, Accepted(r.promised, (0,)), 10.0)
    assert r.events() == []  # one durable acceptance of a quorum of two
    assert r.commit == 0
    r.write_done(write.seq, 10.0)
    assert r.events() == [AppendDone(7, 0), Applied(0, b"x")]
    assert r.commit == 1


def test_a_quorum_of_peers_chooses_without_the_coordinators_own_copy() -> None:
    r = replica(timing=LogTiming())
    elect(r, 10.0)
    r.append(7, b"x", 10.0)
    [write] = r.writes_to_perform()
    r.messages_to_send()
    r.receive(1, Accepted(r.promised, (0,)), 10.0)
    r.receive(2, Accepted(r.promised, (0,)), 10.0)
    assert r.events() == [AppendDone(7, 0), Applied(0, b"x")]
    r.write_done(write.seq, 10.0)  # late, and harmless
    assert r.events() == []


def test_a_single_replica_leads_and_acknowledges_only_after_its_writes() -> None:
    r = replica(0, 1, timing=LogTiming())
    r.tick(10.0)
    [promise] = r.writes_to_perform()
    assert role(r) is Role.CANDIDATE
    r.write_done(promise.seq, 10.0)
    assert role(r) is Role.COORDINATOR
    r.append(1, b"v", 10.0)
    [entries] = r.writes_to_perform()
    assert r.events() == []
    r.write_done(entries.seq, 10.0)
    assert r.events() == [AppendDone(1, 0), Applied(0, b"v")]


def test_compaction_and_the_marks_at_a_clean_stop_are_writes_too() -> None:
    r = replica(0, 1, timing=LogTiming())
    r.tick(10.0)
    r.write_done(r.writes_to_perform()[-1].seq, 10.0)
    r.append(1, b"v", 10.0)
    r.write_done(r.writes_to_perform()[-1].seq, 10.0)
    r.compact(1, b"state")
    r.flush()  # position 0's chosen mark went down with the snapshot's truncation
    assert r.writes_to_perform() == [InstallSnapshot(3, Snapshot(1, b"state"))]


class Recorder:
    """A storage that records the calls made to it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def set_meta(self, status: ReplicaStatus, promised: int) -> None:
        self.calls.append(("set_meta", status, promised))

    def put_entries(self, entries: Sequence[Entry], *, sync: bool = True) -> None:
        self.calls.append(("put_entries", [e.position for e in entries], sync))

    def install_snapshot(self, snapshot: Snapshot) -> None:
        self.calls.append(("install_snapshot", snapshot.position))

    def load(self) -> Durable:
        return Durable()

    def close(self) -> None:
        pass


def test_performing_writes_keeps_their_order_and_joins_runs_of_entries() -> None:
    disk = Recorder()
    e = [Entry(p, 1, b"v") for p in range(4)]
    perform_writes(
        disk,
        [
            PutEntries(1, (e[0], e[1]), sync=False),
            PutEntries(2, (e[1], e[2])),
            SetMeta(3, VOTING, 5),
            PutEntries(4, (e[3],), sync=False),
            InstallSnapshot(5, Snapshot(2, b"s")),
        ],
    )
    assert disk.calls == [
        ("put_entries", [0, 1, 2], True),
        ("set_meta", VOTING, 5),
        ("put_entries", [3], False),
        ("install_snapshot", 2),
    ]


# --- the simulator ---------------------------------------------------------------------------


class EarlyAnswers(Replica):
    """A broken core that sends every message at once, before its writes are durable."""

    def messages_to_send(self) -> list[tuple[int, Message]]:
        out = [(dst, msg) for _, dst, msg in self._held]
        self._held = []
        return out


async def power_loss(clock: trio.testing.MockClock, seed: int) -> list[str]:
    """Slow disks under load; then every replica loses power at once, and comes back."""
    sim = LogSim(seed, 3, clock=clock)
    sim.faults.disk_delay = (0.005, 0.03)
    sim.start_all()
    assert await sim.run_until(trio.current_time() + 5, lambda: sim.leader() is not None)
    sim.add_clients(4)
    await sim.run_until(trio.current_time() + 1 + seed * 0.0137, client_every=0.005)
    assert any(r.writing for r in sim.replicas)  # writes were under way
    for r in sim.replicas:
        sim.crash(r.index)
    sim.start_all()
    await sim.run_until(trio.current_time() + 2, client_every=0.005)
    assert await sim.run_until(trio.current_time() + 30, sim.all_caught_up)
    assert len(sim.acked) > 50
    return sim.check()


def run_sim(seed: int) -> list[str]:
    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(power_loss, clock, seed, clock=clock)


@pytest.mark.parametrize("seed", range(4))
def test_losing_every_replicas_writes_under_way_loses_no_acknowledged_append(seed: int) -> None:
    assert run_sim(seed) == []


def test_the_simulation_catches_a_core_that_answers_before_its_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logsim, "Replica", EarlyAnswers)
    for seed in range(4):
        assert any("both chosen" in p for p in run_sim(seed)), seed


# --- the trio server -------------------------------------------------------------------------


class GatedDisk(SqliteLogStorage):
    """SQLite storage whose writes block, while the gate is closed, until it opens."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = threading.Event()  # a write is waiting at the gate
        self.stuck = False  # the gate stayed shut too long: the test must fail

    def _wait(self) -> None:
        if not self.gate.is_set():
            self.blocked.set()
            # On the event loop this would freeze the test too; the timeout lets it fail.
            self.stuck = self.stuck or not self.gate.wait(timeout=5)

    def set_meta(self, status: ReplicaStatus, promised: int) -> None:
        self._wait()
        super().set_meta(status, promised)

    def put_entries(self, entries: Sequence[Entry], *, sync: bool = True) -> None:
        self._wait()
        super().put_entries(entries, sync=sync)


async def next_message(stream: trio.SocketStream, reader: FrameReader) -> Message:
    while True:
        for body in reader.feed(b""):
            return decode_message(body)
        data = await stream.receive_some(65536)
        assert data, "the replica closed its link"
        for body in reader.feed(data):
            return decode_message(body)


async def test_a_blocked_write_holds_its_answer_and_the_event_loop_goes_on(tmp_path: Path) -> None:
    addresses = [("127.0.0.1", p) for p in free_ports(3)]
    disk = GatedDisk(tmp_path / "log.sqlite")
    disk.set_meta(VOTING, 0)  # a voting replica of an initialised log
    log = ReplicatedLog(0, addresses, disk, timing=QUIET, rng=random.Random(0))
    ballot = make_ballot(1, 1)
    # The test plays replica 1: it listens for replica 0's link and sends it an accept.
    listeners = await trio.open_tcp_listeners(addresses[1][1], host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(log.serve)
        with trio.fail_after(5):
            link = await listeners[0].accept()
            reader = FrameReader()
            while not (bodies := list(reader.feed(await link.receive_some(65536)))):
                pass
            assert decode_hello(bodies[0]).replica == 0
            assert len(bodies) == 1  # nothing but the hello yet
        disk.gate.clear()
        to_replica = await trio.open_tcp_stream(*addresses[0])
        await to_replica.send_all(
            encode_frame(peer_hello(3, 1))
            + encode_frame(encode_message(Accept(ballot, ((0, b"v"),), 0)))
        )
        assert await trio.to_thread.run_sync(disk.blocked.wait, 5)
        # The write is blocked: the loop still serves clients and timers...
        with trio.fail_after(2):
            status = await request_once(addresses[0], {"op": "status"}, answer_within=2)
            # Not a wait for readiness: this sleep is a trio timer, the thing under test, and it
            # must fire (within fail_after) while the write is still blocked.
            await trio.sleep(0.05)
        assert not disk.stuck, "the write blocked the event loop"
        assert status["writes_pending"] >= 1
        # ...and the accepted, which depends on the write, has not left. The gate stays shut
        # through the window, so an answer sent early would already be here.
        with trio.move_on_after(0.3) as waited:
            await next_message(link, reader)
        assert waited.cancelled_caught, "an answer left before its write was durable"
        disk.gate.set()
        with trio.fail_after(5):
            answer = await next_message(link, reader)
        assert answer == Accepted(ballot, (0,))
        assert not disk.stuck
        nursery.cancel_scope.cancel()
    await to_replica.aclose()
    await link.aclose()
    for listener in listeners:
        await listener.aclose()
