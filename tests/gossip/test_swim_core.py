"""Pure tests of the membership core's rules (Lifeguard maths, refutation, incarnations)."""

from __future__ import annotations

import math
import random

import pytest

from vxnet.gossip._lifeguard import Awareness, Suspicion, push_pull_scale, suspicion_timeout


@pytest.mark.parametrize(
    ("n", "expected"), [(1, 4.0), (5, 4.0), (10, 4.0), (100, 8.0), (1000, 12.0), (5000, 14.792)]
)
def test_suspicion_min_timeout_matches_memberlist(n: int, expected: float) -> None:
    assert suspicion_timeout(4, n, 1.0) == pytest.approx(expected, abs=1e-3)


def test_suspicion_shrinks_with_independent_confirmations() -> None:
    low, high = 4.0, 24.0
    s = Suspicion(start=100.0, k=2, min=low, max=high, confirmations={"a"}, deadline=100 + high)
    assert not s.confirm("a"), "the first accuser does not count twice"
    assert s.confirm("b")
    frac = math.log(2) / math.log(3)
    assert s.deadline == pytest.approx(100 + math.floor((high - frac * (high - low)) * 1000) / 1000)
    assert s.confirm("c")
    assert s.deadline == pytest.approx(100 + low)
    assert not s.confirm("d"), "k confirmations reached: no further change"


def test_awareness_is_bounded_and_scales_timeouts() -> None:
    a = Awareness(8)
    a.apply(-5)
    assert a.score == 0
    assert a.scale(1.0) == 1.0
    a.apply(100)
    assert a.score == 7
    assert a.scale(0.5) == 4.0


@pytest.mark.parametrize(
    ("n", "factor"), [(10, 1), (32, 1), (33, 2), (64, 2), (65, 3), (1000, 6), (5000, 9)]
)
def test_push_pull_interval_scales_for_large_clusters(n: int, factor: int) -> None:
    assert push_pull_scale(30.0, n) == 30.0 * factor


def _drive_with_peers(seed: int) -> tuple[list[tuple[tuple[str, int], bytes]], list[float]]:
    """A core that knows 8 peers, ticked for a minute: every datagram it sent, and its deadlines."""
    from vxnet.gossip._membership import Membership
    from vxnet.gossip._messages import (
        PROTOCOL_MAX,
        PROTOCOL_MIN,
        PROTOCOL_SPOKEN,
        NodeStatus,
        PushNodeState,
    )

    vsn = bytes([PROTOCOL_MIN, PROTOCOL_MAX, PROTOCOL_SPOKEN, 2, 5, 5])
    peers = [
        PushNodeState(f"p{i}", bytes([198, 18, 0, 2 + i]), 7946, b"", 1, NodeStatus.ALIVE, vsn)
        for i in range(8)
    ]
    core = Membership("a", bytes([198, 18, 0, 1]), 7946, now=0.0, rng=random.Random(seed))
    core.adopt(peers, 0.0)
    sent: list[tuple[tuple[str, int], bytes]] = []
    deadlines: list[float] = []
    t = 0.0
    while t < 60.0:
        core.tick(t)
        sent += core.datagrams_to_send()
        deadlines.append(core.next_deadline())
        t = max(deadlines[-1], t + 0.01)
    return sent, deadlines


def test_rng_is_the_only_randomness() -> None:
    # Two cores built the same way with the same seed, knowing 8 peers that never answer, send
    # the same datagrams at the same times; another seed probes and gossips in another order.
    sent, deadlines = _drive_with_peers(7)
    assert len({addr for addr, _ in sent}) == 8, "it talked to every peer"
    assert (sent, deadlines) == _drive_with_peers(7)
    assert [addr for addr, _ in _drive_with_peers(8)[0]] != [addr for addr, _ in sent]


def test_the_complete_parts_of_a_truncated_compound_are_kept() -> None:
    from vxnet.gossip._membership import Membership
    from vxnet.gossip._messages import Alive
    from vxnet.gossip._wire import encode_message, make_compound

    core = Membership("a", bytes([198, 18, 0, 1]), 7946, now=0.0, rng=random.Random(1))
    alive = encode_message(
        Alive(1, "b", bytes([198, 18, 0, 2]), 7946, b"", bytes([1, 5, 2, 2, 5, 5]))
    )
    packet = make_compound([alive, encode_message(Alive(1, "c", bytes(4), 1, b"", b""))])
    core.receive_packet(packet[:-5], ("198.18.0.2", 7946), 0.1)  # the second part is cut short
    assert core.member("b") is not None
    assert core.member("c") is None
    assert core.stats.bad_packets == 1
