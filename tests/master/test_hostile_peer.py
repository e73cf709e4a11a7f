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

from hostile_paxos import SAFE_KINDS, hostile
from vxnet.replog import Accept, Accepted, Heartbeat, Learned, Prepare, Promise
from vxnet.replog._core import (
    MAX_AHEAD,
    MAX_BALLOT,
    MAX_POSITION,
    Message,
    Replica,
    message_problem,
)
from vxnet.replog._storage import Durable, ReplicaStatus, Snapshot
from vxnet.replog._wire import WireError, decode_message, encode_message
from vxnet.testing.logsim import LogSim


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
