"""Well-framed but hostile Paxos messages from a peer the log trusts (it holds a master's
certificate): out-of-range ballots and positions, forged chosen entries and snapshots, promises
of far-away log ends. In the simulation (hypothesis) no replica stops, every checker holds for
what clients were told, and the log serves appends again afterwards."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from vxnet.replog import (
    Accept,
    Accepted,
    Fetch,
    Heartbeat,
    Learned,
    Prepare,
    Promise,
    RecoverRequest,
    RecoverResponse,
    Reject,
)
from vxnet.replog._core import (
    MAX_AHEAD,
    MAX_BALLOT,
    MAX_POSITION,
    Message,
    Replica,
    message_problem,
)
from vxnet.replog._storage import Durable, Entry, ReplicaStatus, Snapshot
from vxnet.replog._wire import WireError, decode_message, encode_message
from vxnet.testing.logsim import LogSim

EDGES = [0, 1, 255, 256, 2**31, 2**40, 2**47]  # in range, with room for elections above
OUT = [MAX_BALLOT + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1]  # above every bound

# Kinds whose every in-range value is safe from any sender: Paxos lets anyone propose a ballot
# (Prepare), refuse one (Reject) or read (Fetch, RecoverRequest). The others carry claims (this
# was accepted, that is chosen, the commit is there) that a peer holding a master's certificate
# can forge: no protocol without Byzantine quorums survives those, so for them only "no replica
# stops" is asked.
SAFE_KINDS = (0, 5, 6, 8)


def hostile(rng: random.Random, ballot: int, commit: int, kinds: tuple[int, ...]) -> Message:
    """One message of a random kind among ``kinds``, its numbers near the cluster's, at the
    edges, or (one in five messages) above every bound."""
    out = rng.random() < 0.2

    def num(near: int) -> int:
        if out and rng.random() < 0.5:
            return rng.choice(OUT)
        if rng.random() < 0.5:
            return max(0, near + rng.randint(-3, 3))
        return rng.choice(EDGES) if rng.random() < 0.6 else rng.randint(0, 5000)

    count = rng.randint(0, 3)
    entries = tuple((num(commit), rng.randbytes(rng.randint(0, 6))) for _ in range(count))
    kind = rng.choice(range(10) if out else kinds)
    if kind == 0:
        return Prepare(num(ballot), num(commit))
    if kind == 1:
        accepted = tuple(
            Entry(num(commit), num(ballot), rng.randbytes(3), rng.random() < 0.5)
            for _ in range(rng.randint(0, 3))
        )
        return Promise(num(ballot), accepted, num(commit))
    if kind == 2:
        return Accept(num(ballot), entries, num(commit))
    if kind == 3:
        return Accepted(num(ballot), tuple(num(commit) for _ in range(rng.randint(0, 3))))
    if kind == 4:
        return Heartbeat(num(ballot), num(commit), num(commit))
    if kind == 5:
        return Reject(num(ballot), num(ballot))
    if kind == 6:
        return Fetch(num(commit), num(commit))
    if kind == 7:
        snapshot = None if rng.random() < 0.7 else Snapshot(num(commit), rng.randbytes(5))
        return Learned(entries, snapshot, num(commit))
    if kind == 8:
        return RecoverRequest()
    return RecoverResponse(rng.choice(list(ReplicaStatus)), num(ballot), num(commit), num(commit))


def run(seed: int, count: int, kinds: tuple[int, ...], settle: bool) -> LogSim:
    """A three-replica log under clients, ``count`` hostile messages over 0.6 s, then (with
    ``settle``) until the log has served appends again and every replica caught up."""

    async def body(clock: trio.testing.MockClock) -> LogSim:
        rng = random.Random(seed)
        sim = LogSim(seed, 3, clock=clock)
        sim.start_all()
        sim.add_clients(3)
        await sim.run_until(trio.current_time() + 3, client_every=0.02)
        start = trio.current_time()
        cores = [r.core for r in sim.replicas if r.core is not None]
        ballot = max(c.promised for c in cores)
        commit = max(c.commit for c in cores)
        for i in range(count):
            msg = hostile(rng, ballot, commit, kinds)
            sim.inject(rng.randrange(3), rng.randrange(3), msg, start + i * 0.01)
        await sim.run_until(start + 4, client_every=0.02)
        if settle:
            before = len(sim.acked)
            await sim.run_until(trio.current_time() + 10, client_every=0.02)
            assert len(sim.acked) > before, "no append completed after the hostile messages"
            assert await sim.run_until(trio.current_time() + 30, sim.all_caught_up)
        return sim

    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(body, clock, clock=clock)


def stopped(sim: LogSim) -> list[int]:
    return [r.index for r in sim.replicas if r.core is None]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_ballots_reads_and_out_of_range_values_break_nothing(seed: int) -> None:
    sim = run(seed, 60, SAFE_KINDS, settle=True)
    assert stopped(sim) == []
    assert sim.check() == []


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_forged_claims_from_a_trusted_peer_stop_no_replica(seed: int) -> None:
    sim = run(seed, 60, tuple(range(10)), settle=False)
    assert stopped(sim) == []


def test_out_of_range_values_are_refused_on_the_wire_and_dropped_by_the_core() -> None:
    bad: list[Message] = [
        Prepare(MAX_BALLOT + 1, 0),
        Heartbeat(1, MAX_POSITION + 1, 0),
        Learned((), Snapshot(2**63 - 1, b""), 0),
        Accepted(MAX_BALLOT + 1, ()),
    ]
    for msg in bad:
        assert message_problem(msg) is not None
        with pytest.raises(WireError, match=r"not in 0\.\."):
            decode_message(encode_message(msg))
    replica = Replica(0, 3, Durable(status=ReplicaStatus.VOTING), rng=random.Random(1), now=0.0)
    for msg in bad:
        replica.receive(1, msg, 1.0)
    far = Promise(1, (), MAX_AHEAD + 10)  # a refill up to there would be materialized
    replica.receive(1, far, 1.0)
    replica.receive(1, Accept(300, ((MAX_AHEAD + 5, b"x"),), 0), 1.0)
    assert replica.refused == len(bad) + 2
    assert replica.promised == 0
    assert replica.writes_to_perform() == []
