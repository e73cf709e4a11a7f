"""The transmit-limited broadcast queue."""

from __future__ import annotations

import pytest

from vxnet.gossip._queue import BroadcastQueue, retransmit_limit


@pytest.mark.parametrize(
    ("mult", "n", "limit"),
    [(4, 1, 4), (4, 9, 4), (4, 10, 8), (4, 999, 12), (4, 1000, 16), (2, 5000, 8)],
)
def test_retransmit_limit_is_mult_times_log10(mult: int, n: int, limit: int) -> None:
    assert retransmit_limit(mult, n) == limit


def test_each_broadcast_is_sent_a_limited_number_of_times() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.put(b"a" * 10)
    sent = 0
    while q.take(2, 1400, num_nodes=10):
        sent += 1
    assert sent == retransmit_limit(4, 10)
    assert len(q) == 0


def test_newer_news_about_a_key_replaces_older() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.put(b"alive-1", key="n1")
    q.put(b"other", key="n2")
    q.put(b"alive-2", key="n1")
    assert len(q) == 2
    assert sorted(q.take(2, 1400, 10)) == [b"alive-2", b"other"]


def test_least_sent_and_newest_first_within_the_room() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.put(b"old" * 10)
    assert q.take(2, 1400, 10) == [b"old" * 10]
    q.put(b"new1")
    q.put(b"new2")
    # Room for two 4-byte messages (+2 overhead each) but not the 30-byte one.
    assert q.take(2, 12, 10) == [b"new2", b"new1"]
    assert q.take(2, 1400, 10)[0] in (b"new2", b"new1")


def test_a_message_too_large_for_this_packet_waits_for_the_next() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.put(b"x" * 100)
    q.put(b"y" * 10)
    assert q.take(2, 50, 10) == [b"y" * 10]
    assert b"x" * 100 in q.take(2, 1400, 10)
