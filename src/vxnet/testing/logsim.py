"""Deterministic simulation of the replicated log: replicas, disks, network, clients, checkers.

One trio task runs ``n`` :class:`~._paxos.Replica` cores over a simulated network (loss, delay
and so reordering, duplication, partitions, also one-way) with simulated disks
(:class:`~._simdisk.SimDisk`: unsynced writes lost and the last write torn on a crash, wiped
disks) under trio's ``MockClock``; one seeded RNG decides everything. Each replica's writes
(:meth:`~vxnet.replog._core.Replica.writes_to_perform`) are performed as its server performs them:
one batch at a time, in order, each taking a random disk time (``faults.disk_delay``), after
which the core hears :meth:`~vxnet.replog._core.Replica.write_done` and releases what waited, so
a message sent before its write is durable would show as a lost promise or acceptance. Crashes
strike at any point: during a write (the replica loses it and what waited), around each persist
(through the disk's crash hook) and between the messages a replica sends. Clients append unique
values and record a history.

Checkers (:meth:`LogSim.check`): at most one value is ever chosen per position (across every
replica and every incarnation); every acknowledged append is in the log at the position it was
acknowledged with; every replica applies a prefix of one sequence; the client history is
linearizable (:mod:`.lincheck`, timed-out appends as maybe-applied).
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from vxnet.replog import (
    AppendDone,
    AppendFailed,
    Applied,
    LogTiming,
    Message,
    Replica,
    Role,
    SnapshotInstalled,
    StorageFailure,
    perform_writes,
)
from vxnet.testing.lincheck import UNKNOWN, Operation, Result, check
from vxnet.testing.simdisk import SimCrash, SimDisk
from vxnet.testing.simtime import EventQueue

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from trio.testing import MockClock

    from vxnet.replog import Write


__all__ = ["GappedLog", "LogSim", "SimReplica"]

CLIENT_TIMEOUT = 1.0  # a client gives up on an append after this long (it may still be chosen)


@dataclass(frozen=True, slots=True)
class GappedLog:
    """The client's view of the log: an append returns a position above every earlier one.

    Positions have gaps (a new coordinator fills holes with no-ops), so the model only asks that
    the positions of appends, in linearization order, increase.
    """

    def init(self) -> int:
        return -1

    def step(self, state: int, input: Hashable, output: Hashable) -> tuple[bool, int]:
        if output is UNKNOWN:
            return True, state  # a maybe-applied append: its position is unknown, any is fine
        assert isinstance(output, int)
        return output > state, max(state, output)


@dataclass(slots=True)
class SimReplica:
    index: int
    disk: SimDisk
    core: Replica | None = None  # None while crashed
    applied: list[tuple[int, bytes]] = field(default_factory=list)  # this incarnation
    incarnation: int = 0
    wake: float = math.inf
    writes: list[Write] = field(default_factory=list)  # asked for, not yet being written
    writing: bool = False  # a batch is on its way to the disk


@dataclass(slots=True)
class _Client:
    id: int
    seq: int = 0
    busy: bool = False
    target: int = 0
    request: int = 0
    sent_at: float = 0.0


@dataclass(slots=True)
class _Faults:
    loss: float = 0.0
    duplicate: float = 0.0
    delay: tuple[float, float] = (0.0002, 0.002)
    disk_delay: tuple[float, float] = (0.0001, 0.001)  # one batch of writes, fsync included
    blocked: set[tuple[int, int]] = field(default_factory=set)
    crash_on_persist: float = 0.0
    crash_on_send: float = 0.0
    torn: float = 0.5


def _unique_value(client: int, seq: int) -> bytes:
    return f"c{client}-{seq}".encode()


def _append(core: Replica, *, request: int, value: bytes, now: float) -> None:
    core.append(request, value, now)


class LogSim:
    """A simulated cluster of log replicas with clients. See the module docstring."""

    def __init__(
        self,
        seed: int,
        n: int = 3,
        *,
        clock: MockClock | None = None,
        timing: LogTiming | None = None,
        make_value: Callable[[int, int], bytes] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.make_value = make_value or _unique_value
        self.n = n
        self.timing = timing or LogTiming()
        self.faults = _Faults()
        self.events = EventQueue(clock)
        self.replicas = [
            SimReplica(i, SimDisk(crash_hook=self._crash_hook, torn=self._torn)) for i in range(n)
        ]
        self.history: list[Operation] = []
        self._open: dict[int, int] = {}  # request -> index in history
        self._clients: list[_Client] = []
        self._request = 0
        self.acked: dict[bytes, int] = {}  # value -> position
        self.chosen: dict[int, bytes] = {}  # every chosen value ever seen
        self.violations: list[str] = []
        self.crashes = 0
        self.storage_failures = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def start_all(self) -> None:
        for r in self.replicas:
            self.start(r.index)

    def start(self, index: int) -> None:
        r = self.replicas[index]
        if r.core is not None:
            return
        now = trio.current_time()
        r.incarnation += 1
        r.applied = []
        r.writes = []
        r.writing = False
        try:
            durable = r.disk.load()
        except StorageFailure:
            return
        r.core = Replica(
            index,
            self.n,
            durable,
            rng=random.Random(self.rng.getrandbits(64)),
            now=now,
            timing=self.timing,
        )
        self._flush(r, now)

    def crash(self, index: int) -> None:
        """Kill a replica's process; its disk keeps what was synced."""
        r = self.replicas[index]
        if r.core is not None:
            r.core = None  # its memory is gone; the disk keeps what calls made durable
            r.writes = []  # never written: nothing that waited for them was sent
            r.writing = False
            self.crashes += 1

    def rot(self, index: int) -> None:
        """Damage one synced record on a crashed replica's disk (bit rot)."""
        self.crash(index)
        r = self.replicas[index]
        kinds = [("meta", 0), *(("entry", p) for p in range(0, 200, 7))]
        kind, position = kinds[self.rng.randrange(len(kinds))]
        r.disk.rot(kind, position)

    def wipe(self, index: int) -> None:
        """Lose a crashed replica's disk."""
        self.crash(index)
        self.replicas[index].disk.wipe()

    # --- faults ----------------------------------------------------------------------------------

    def inject(self, src: int, dst: int, msg: Message, at: float) -> None:
        """Deliver ``msg`` to replica ``dst`` at ``at`` as if replica ``src`` sent it (a forged
        or hostile message: no loss, no delay)."""
        target = self.replicas[dst]

        def deliver(t: float) -> None:
            self._step(target, lambda c: c.receive(src, msg, t), t)

        self.events.push(at, deliver)

    def partition(self, *groups: list[int]) -> None:
        for i, a in enumerate(groups):
            for b in groups[i + 1 :]:
                for x in a:
                    for y in b:
                        self.faults.blocked |= {(x, y), (y, x)}

    def block(self, src: int, dst: int) -> None:
        self.faults.blocked.add((src, dst))

    def heal(self) -> None:
        """Clear network faults and crash injection (delays stay)."""
        self.faults = _Faults(
            delay=self.faults.delay, disk_delay=self.faults.disk_delay, torn=self.faults.torn
        )

    def _crash_hook(self, point: str) -> bool:
        return self.faults.crash_on_persist > 0 and self.rng.random() < self.faults.crash_on_persist

    def _torn(self) -> bool:
        return self.rng.random() < self.faults.torn

    # --- clients ---------------------------------------------------------------------------------

    def add_clients(self, count: int) -> None:
        for _ in range(count):
            self._clients.append(_Client(len(self._clients)))

    def client_step(self, now: float) -> None:
        """Every idle client sends its next append to the replica it believes leads."""
        for c in self._clients:
            if c.busy and now - c.sent_at > CLIENT_TIMEOUT:
                self._finish(c.request, now, None, failed=True)  # gave up: maybe applied
                c.target = self.rng.randrange(self.n)
            if c.busy:
                continue
            c.seq += 1
            value = self.make_value(c.id, c.seq)
            self._request += 1
            request = self._request
            self._open[request] = len(self.history)
            self.history.append(Operation(c.id, now, None, ("append", value), None))
            c.busy = True
            c.request = request
            c.sent_at = now
            target = self.replicas[c.target]
            if target.core is None:
                self._finish(request, now, None, failed=True)
                c.target = self.rng.randrange(self.n)
                continue
            self._step(
                target, functools.partial(_append, request=request, value=value, now=now), now
            )

    def _client_of(self, request: int) -> _Client:
        return self._clients[self.history[self._open[request]].client]

    def _finish(self, request: int, now: float, position: int | None, *, failed: bool) -> None:
        index = self._open.pop(request, None)
        if index is None:
            return
        op = self.history[index]
        client = self._clients[op.client]
        client.busy = False
        if failed:
            return  # left open: maybe applied (ret None)
        self.history[index] = Operation(op.client, op.call, now, op.input, position)
        value = op.input[1]  # type: ignore[index]
        self.acked[value] = position  # type: ignore[assignment]

    # --- running ---------------------------------------------------------------------------------

    async def run_until(
        self,
        deadline: float,
        until: Callable[[], bool] | None = None,
        client_every: float | None = None,
    ) -> bool:
        """Run events up to ``deadline`` (clients acting every ``client_every`` s, if given).

        Returns:
            Whether ``until()`` held when the run stopped (True without a condition).
        """
        next_client = trio.current_time() if client_every is not None else math.inf
        while True:
            if until is not None and until():
                return True
            upcoming = self.events.next_time
            if min(upcoming, next_client) > deadline:
                await self.events.advance_to(deadline)
                return until() if until is not None else True
            if upcoming <= next_client:
                await self.events.advance_to(upcoming)
                self.events.run_next()
            else:
                await self.events.advance_to(next_client)
                self.client_step(next_client)
                assert client_every is not None
                next_client += client_every

    def _step(self, r: SimReplica, action: Callable[[Replica], None], now: float) -> None:
        core = r.core
        if core is None:
            return
        action(core)
        self._flush(r, now)

    def _write(self, r: SimReplica, now: float) -> None:
        """Start the next batch of ``r``'s writes; it is durable after a disk delay."""
        if r.writing or not r.writes:
            return
        batch, r.writes = r.writes, []
        r.writing = True
        incarnation = r.incarnation

        def done(t: float) -> None:
            core = r.core
            if core is None or r.incarnation != incarnation:
                return  # crashed meanwhile: the batch never reached the disk
            r.writing = False
            try:
                perform_writes(r.disk, batch)
            except SimCrash:
                self.crash(r.index)
                return
            except StorageFailure:
                self.storage_failures += 1
                self.crash(r.index)
                return
            core.write_done(batch[-1].seq, t)
            self._flush(r, t)

        low, high = self.faults.disk_delay
        self.events.push(now + self.rng.uniform(low, high), done)

    def _flush(self, r: SimReplica, now: float) -> None:
        core = r.core
        if core is None:
            return
        for event in core.events():
            self._on_event(r, event, now)
        for dst, msg in core.messages_to_send():
            if self.faults.crash_on_send and self.rng.random() < self.faults.crash_on_send:
                self.crash(r.index)  # dies between two sends
                return
            self._send(r.index, dst, msg, now)
        r.writes += core.writes_to_perform()
        self._write(r, now)
        wake = core.next_deadline()
        r.wake = wake
        incarnation = r.incarnation

        def fire(t: float) -> None:
            if r.core is None or r.incarnation != incarnation or r.wake != wake:
                return
            self._step(r, lambda c: c.tick(t), t)

        self.events.push(max(wake, now), fire)

    def _send(self, src: int, dst: int, msg: Message, now: float) -> None:
        if (src, dst) in self.faults.blocked:
            return
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            if self.rng.random() < self.faults.loss:
                continue
            low, high = self.faults.delay
            target = self.replicas[dst]

            def deliver(t: float, target: SimReplica = target) -> None:
                self._step(target, lambda c: c.receive(src, msg, t), t)

            self.events.push(now + self.rng.uniform(low, high), deliver)

    def _on_event(self, r: SimReplica, event: object, now: float) -> None:
        if isinstance(event, Applied):
            expected = len(r.applied) and r.applied[-1][0] + 1
            if r.applied and event.position != expected:
                self.violations.append(
                    f"replica {r.index} applied {event.position} after {r.applied[-1][0]}"
                )
            r.applied.append((event.position, event.value))
            seen = self.chosen.setdefault(event.position, event.value)
            if seen != event.value:
                self.violations.append(
                    f"position {event.position}: {seen!r} and {event.value!r} both chosen"
                )
        elif isinstance(event, SnapshotInstalled):
            r.applied = [(event.snapshot.position - 1, b"")]
        elif isinstance(event, AppendDone):
            self._finish(event.request, now, event.position, failed=False)
        elif isinstance(event, AppendFailed):
            if event.request in self._open:
                client = self._client_of(event.request)
                client.target = (
                    event.leader if event.leader is not None else (self.rng.randrange(self.n))
                )
            self._finish(event.request, now, None, failed=True)

    # --- views and checks ------------------------------------------------------------------------

    def leader(self) -> int | None:
        leaders = [
            r.index for r in self.replicas if r.core is not None and r.core.role is Role.COORDINATOR
        ]
        return leaders[0] if len(leaders) == 1 else None

    def all_caught_up(self) -> bool:
        cores = [r.core for r in self.replicas if r.core is not None]
        if len(cores) < self.n:
            return False
        commits = {c.commit for c in cores}
        return len(commits) == 1 and all(c.applied == c.commit for c in cores)

    def check(self) -> list[str]:
        """Every checker; returns the violations found (empty when all hold)."""
        problems = list(self.violations)
        for value, position in self.acked.items():
            if self.chosen.get(position) != value:
                problems.append(
                    f"acknowledged {value!r} at {position}, "
                    f"but {self.chosen.get(position)!r} is chosen there"
                )
        for r in self.replicas:
            if r.core is None:
                continue
            for pos, value in r.core.chosen_entries():
                if pos in self.chosen and self.chosen[pos] != value:
                    problems.append(
                        f"replica {r.index} holds {value!r} at {pos}, "
                        f"{self.chosen[pos]!r} was chosen"
                    )
        result: Result = check(self.history, GappedLog())
        if not result.ok:
            problems.append(f"not linearizable: {result.explanation}")
        return problems
