"""A master never stores a snapshot it could not start from: the log asks the master's check
before it installs a peer's snapshot. Mutations of a real snapshot (hypothesis) are either
refused with a reason or load into an allocator that works; the core drops a refused one whole."""

from __future__ import annotations

import random
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from vxnet.config import NetworkConfig
from vxnet.master._allocator import Allocator
from vxnet.master._service import _load_snapshot, snapshot_problem
from vxnet.replog._core import Fetch, Heartbeat, Learned, Replica
from vxnet.replog._storage import Durable, ReplicaStatus, Snapshot

NETWORK = NetworkConfig()


def busy() -> Allocator:
    allocator = Allocator(NETWORK)
    for i in range(6):
        allocator.apply(Allocator.register_command(f"198.18.0.{10 + i}", None, True, i % 2 == 0))
    return allocator


def master_snapshot(allocator: Allocator) -> bytes:
    data: bytes = msgpack.packb(
        {"allocator": allocator.snapshot(), "network_in_log": False}, use_bin_type=True
    )
    return data


ODD: list[Any] = [None, True, -1, 0, 2**31, 2**64 - 1, -(2**63), 1.5, "", "x" * 40, b"", [], {}]


def mutate(value: Any, rng: random.Random) -> Any:
    """``value`` with one node somewhere inside replaced, dropped or duplicated."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value, key=repr))
        out = dict(value)
        roll = rng.random()
        if roll < 0.15:
            del out[key]
        elif roll < 0.25:
            out["extra"] = rng.choice(ODD)
        else:
            out[key] = mutate(value[key], rng)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        out_list = list(value)
        i = rng.randrange(len(value))
        roll = rng.random()
        if roll < 0.15:
            del out_list[i]
        elif roll < 0.3:
            out_list.append(out_list[i])  # a duplicate agent, a duplicate network
        else:
            out_list[i] = mutate(value[i], rng)
        return out_list
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return max(-(2**63), min(2**64 - 1, value + rng.choice([-1, 1, 2**32, -(2**32)])))
    return rng.choice(ODD)


def mutated(seed: int) -> bytes:
    rng = random.Random(seed)
    live = busy()
    outer = {"allocator": live.snapshot(), "network_in_log": False}
    if rng.random() < 0.2:
        outer = mutate(outer, rng)
    else:  # inside the allocator's own msgpack
        inner = msgpack.unpackb(live.snapshot(), raw=False)
        for _ in range(rng.randint(1, 3)):
            inner = mutate(inner, rng)
        outer["allocator"] = msgpack.packb(inner, use_bin_type=True)
    data: bytes = msgpack.packb(outer, use_bin_type=True)
    if rng.random() < 0.1:
        data = data[: rng.randrange(len(data))]
    return data


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_a_mutated_snapshot_is_refused_with_a_reason_or_loads_into_a_working_allocator(
    seed: int,
) -> None:
    data = mutated(seed)
    problem = snapshot_problem(data)  # raises nothing but a refusal
    if problem is not None:
        assert problem
        return
    allocator, _ = _load_snapshot(data)
    again = Allocator.restore(allocator.snapshot())  # what the master would write next
    assert again.state() == allocator.state()
    outcome = allocator.apply(Allocator.register_command("198.18.1.1", None, True, True))
    assert outcome.error is None or "no free" in outcome.error


def test_refusals_name_the_problem() -> None:
    good = master_snapshot(busy())
    assert snapshot_problem(good) is None
    assert "not msgpack" in (snapshot_problem(b"\xc1") or "")
    assert "network_in_log" in (snapshot_problem(msgpack.packb({"allocator": b""})) or "")
    inner = msgpack.unpackb(busy().snapshot(), raw=False)
    inner["agents"].append(inner["agents"][0])
    twice = msgpack.packb(
        {"allocator": msgpack.packb(inner), "network_in_log": False}, use_bin_type=True
    )
    assert "appears twice" in (snapshot_problem(twice) or "")


def asking(ballot: int = 256) -> Replica:
    """Replica 1 of 3, told by coordinator 0's heartbeat that the log is chosen up to 6, and
    so fetching from it."""
    replica = Replica(
        1,
        3,
        Durable(status=ReplicaStatus.VOTING),
        rng=random.Random(1),
        now=0.0,
        check_snapshot=snapshot_problem,
    )
    replica.receive(0, Heartbeat(ballot, 6, 6), 1.0)
    replica.tick(1.0)
    for write in replica.writes_to_perform():  # the promise, durable before anything leaves
        replica.write_done(write.seq, 1.0)
    assert (0, Fetch(0, 6)) in replica.messages_to_send()
    return replica


def test_the_core_never_stores_a_snapshot_the_state_machine_refuses() -> None:
    good, bad = master_snapshot(busy()), b"\x92\x01\x02"
    refusing = asking()
    refusing.receive(0, Learned(((5, b"x"),), Snapshot(5, bad), 6), 1.0)
    assert refusing.refused == 1
    assert refusing.snapshot is None
    assert refusing.commit == 0
    taking = asking()
    taking.receive(0, Learned(((5, b"x"),), Snapshot(5, good), 6), 1.0)
    assert taking.refused == 0
    assert taking.snapshot == Snapshot(5, good)
    assert taking.commit == 6


def test_chosen_entries_and_snapshots_nobody_asked_for_are_refused() -> None:
    good = master_snapshot(busy())
    replica = asking()
    replica.receive(2, Learned((), Snapshot(5, good), 6), 1.0)  # asked 0, not 2
    replica.receive(0, Learned(((0, b"a"), (6, b"z")), None, 7), 1.0)  # 6 is past what it asked
    assert replica.refused == 2
    assert (replica.snapshot, replica.commit) == (None, 0)
    replica.receive(0, Learned(((0, b"a"),), None, 6), 1.0)
    assert (replica.refused, replica.commit) == (2, 1)
