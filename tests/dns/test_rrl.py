"""Response rate limiting (sans-IO core, and a real agent): a prefix gets ``rate`` answers per
second, then every ``slip``-th answer truncated and the rest dropped; other prefixes are not
affected; the table stays bounded; a truncated answer sends the client to TCP."""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

import dns.flags
import dns.message
import dns.query
import pytest

from dns_agent import dns_agent, metric
from vxnet.dns._rrl import DROP, SEND, SLIP, RateLimiter, client_prefix, truncated
from vxnet.dns._zone import ZONE_SUFFIX, Zone
from vxnet.records import TaskRecord as Task

if TYPE_CHECKING:
    from pathlib import Path

A = client_prefix(ipaddress.ip_address("198.18.0.7").packed)
A_NEIGHBOUR = client_prefix(ipaddress.ip_address("198.18.0.200").packed)
B = client_prefix(ipaddress.ip_address("198.18.1.7").packed)
V6 = client_prefix(ipaddress.ip_address("fd01:b::1").packed)


def test_a_prefix_gets_its_rate_then_slips_and_drops_and_refills() -> None:
    rrl = RateLimiter(rate=10, slip=3)
    verdicts = [rrl.verdict(A) for _ in range(19)]
    assert verdicts[:10] == [SEND] * 10
    assert verdicts[10:] == [DROP, DROP, SLIP] * 3
    assert (rrl.limited, rrl.slipped) == (9, 3)
    assert rrl.verdict(A_NEIGHBOUR) == DROP  # the same /24: one bucket
    assert rrl.verdict(B) == SEND  # another /24 is not affected
    assert rrl.verdict(V6) == SEND
    rrl.now = 0.5  # half a second refills half the bucket
    assert [rrl.verdict(A) for _ in range(6)] == [SEND] * 5 + [DROP]  # limited #11 of A's
    rrl.now = 100.0  # never more than one second's worth
    assert [rrl.verdict(A) for _ in range(11)].count(SEND) == 10


def test_slip_zero_drops_every_limited_answer_and_one_truncates_each() -> None:
    for slip, limited in ((0, DROP), (1, SLIP)):
        rrl = RateLimiter(rate=1, slip=slip)
        assert rrl.verdict(A) == SEND
        assert {rrl.verdict(A) for _ in range(5)} == {limited}


def test_the_table_is_bounded_and_forgets_idle_clients_first() -> None:
    rrl = RateLimiter(rate=5, max_clients=100)
    busy = client_prefix(bytes([10, 9, 9, 9]))
    for _ in range(5):
        rrl.verdict(busy)  # its bucket is empty
    for i in range(500):  # spoofed prefixes, each answered once
        rrl.now = i / 1000
        rrl.verdict(client_prefix(bytes([10, i // 256, i % 256, 1])))
        assert len(rrl) <= 100
    assert rrl.limited == 0  # each spoofed prefix had its own bucket


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"rate": 0}, {"rate": 5, "slip": -1}, {"rate": 5, "max_clients": 0}):
        with pytest.raises(ValueError, match="at least"):
            RateLimiter(**kwargs)


@pytest.mark.parametrize("edns", [False, True])
def test_a_truncated_answer_keeps_the_question_and_the_opt_rr(edns: bool) -> None:
    zone = Zone([Task(name="web", framework="marathon", agent_ip="10.0.0.1", ip="9.0.1.2")])
    query = dns.message.make_query(
        f"web.marathon.containerip.{ZONE_SUFFIX}", "A", use_edns=0 if edns else False
    )
    answer = zone.answer(query.to_wire())
    assert answer.reply is not None
    slipped = dns.message.from_wire(truncated(answer.reply))
    assert slipped.id == query.id
    assert slipped.flags & dns.flags.TC
    assert slipped.question == query.question
    assert slipped.answer == []
    assert slipped.edns == (0 if edns else -1)


def test_a_real_agent_limits_a_client_that_asks_too_fast(tmp_path: Path) -> None:
    query = dns.message.make_query(ZONE_SUFFIX, "SOA")
    with dns_agent(tmp_path, "rrl", "rate_limit = 20\nrate_limit_slip = 2\n") as agent:
        whole = slipped = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(1.0)
            wire = query.to_wire()
            for _ in range(200):  # a burst well within a second: 20 tokens at most refill
                udp.sendto(wire, ("127.0.0.1", agent.dns_port))
            try:
                while True:
                    reply = dns.message.from_wire(udp.recv(4096))
                    if reply.flags & dns.flags.TC:
                        slipped += 1
                    else:
                        whole += 1
            except TimeoutError:
                pass
        assert 20 <= whole <= 40, whole
        assert 60 <= slipped <= 100, slipped  # every 2nd of the ~180 limited
        # TCP is not limited: the truncated client gets its answer there.
        for _ in range(30):
            assert dns.query.tcp(query, "127.0.0.1", port=agent.dns_port, timeout=5).answer
        assert metric(agent.api, "vxnet_dns_rate_limited_total") >= 150
