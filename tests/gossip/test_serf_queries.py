"""Serf queries as a vxnet member answers them (sans-IO): de-duplication, filters, acks, the key
queries against the keyring, hostile queries, and replies aimed at strangers."""

from __future__ import annotations

import os
import random

import msgpack

from vxnet.gossip._keyring import Keyring, format_key
from vxnet.gossip._lamport import LamportClock
from vxnet.gossip._layers import NodeLayers, SerfLayer
from vxnet.gossip._membership import Membership
from vxnet.gossip._messages import Alive, User
from vxnet.gossip._serf_codec import decode_serf, encode_serf
from vxnet.gossip._serf_messages import (
    QUERY_FLAG_ACK,
    QUERY_FLAG_NO_BROADCAST,
    SerfMessageType,
    SerfQuery,
    SerfQueryResponse,
)
from vxnet.gossip._serf_queries import (
    IDS_PER_TIME,
    NO_KEYRING,
    QUERY_BUFFER,
    QueryResponder,
    decode_key_response,
    key_request,
)
from vxnet.gossip._wire import encode_message, make_compound

SERF_ADDR = bytes([198, 18, 0, 9])
OLD, NEW = os.urandom(32), os.urandom(16)


def query(
    name: str,
    payload: bytes = b"",
    *,
    ltime: int = 5,
    query_id: int = 1,
    flags: int = 0,
    filters: tuple[bytes, ...] = (),
) -> SerfQuery:
    return SerfQuery(
        ltime, query_id, SERF_ADDR, 7946, "serf-1", filters, flags, 0, 10**9, name, payload
    )


def responder(keyring: Keyring | None = None) -> QueryResponder:
    clock = LamportClock(1)
    clock.witness(5)
    return QueryResponder("vx-a", clock, keyring)


def answer(r: QueryResponder) -> tuple[bool, str, tuple[str, ...], str]:
    (reply,) = r.take_replies()
    assert (reply.addr, reply.port, reply.source_node) == (SERF_ADDR, 7946, "serf-1")
    response = decode_serf(reply.payload)
    assert isinstance(response, SerfQueryResponse)
    assert (response.from_node, response.flags) == ("vx-a", 0)
    a = decode_key_response(response.payload)
    return a.result, a.message, a.keys, a.primary


def test_key_queries_change_the_keyring_as_serf_keys_expects() -> None:
    keyring = Keyring([OLD])
    r = responder(keyring)
    assert r.handle(query("_serf_install-key", key_request(NEW), query_id=1))
    assert answer(r) == (True, "", (), "")
    assert keyring.keys == (OLD, NEW)
    r.handle(query("_serf_use-key", key_request(NEW), query_id=2))
    assert answer(r)[0] is True
    r.handle(query("_serf_remove-key", key_request(OLD), query_id=3))
    assert answer(r)[0] is True
    assert keyring.keys == (NEW,)  # type: ignore[comparison-overlap]  # mypy kept (OLD, NEW)
    r.handle(query("_serf_list-keys", query_id=4))
    assert answer(r) == (True, "", (format_key(NEW),), format_key(NEW))
    assert r.key_changes == 3


def test_refused_key_queries_change_nothing_and_say_why() -> None:
    keyring = Keyring([OLD])
    r = responder(keyring)
    cases = [
        ("_serf_install-key", key_request(b"short"), "16, 24 or 32 bytes"),
        ("_serf_use-key", key_request(NEW), "not in the keyring"),
        ("_serf_remove-key", key_request(OLD), "primary key"),
        ("_serf_install-key", b"\x07\xc1", "Failed to decode"),  # not msgpack
        ("_serf_install-key", bytes([SerfMessageType.KEY_REQUEST]) + msgpack.packb([1]), "decode"),
        ("_serf_install-key", msgpack.packb({"Key": NEW}), "decode"),  # no type byte
    ]
    for i, (name, payload, why) in enumerate(cases):
        r.handle(query(name, payload, query_id=10 + i))
        result, message, _, _ = answer(r)
        assert result is False, name
        assert why in message, (name, message)
    assert keyring.keys == (OLD,)
    assert r.key_changes == 0


def test_without_a_keyring_key_queries_are_refused() -> None:
    r = responder(None)
    r.handle(query("_serf_install-key", key_request(NEW)))
    assert answer(r)[:2] == (False, NO_KEYRING)


def test_a_query_is_handled_once_and_rebroadcast_unless_told_not_to() -> None:
    r = responder(Keyring([OLD]))
    first = query("_serf_list-keys", flags=QUERY_FLAG_ACK)
    assert r.handle(first) is True
    assert len(r.take_replies()) == 2  # the ack, then the response
    assert r.handle(first) is False  # seen: neither answered nor passed on again
    assert r.take_replies() == []
    assert r.handle(query("uptime", query_id=2, flags=QUERY_FLAG_NO_BROADCAST)) is False
    assert [decode_serf(x.payload) for x in r.take_replies()] == []  # no ack asked, no answer


def test_old_queries_and_floods_of_ids_are_dropped_and_memory_stays_bounded() -> None:
    clock = LamportClock(1)
    r = QueryResponder("vx-a", clock, None)
    clock.witness(10 * QUERY_BUFFER)
    assert r.handle(query("uptime", ltime=10, flags=QUERY_FLAG_ACK)) is False
    assert r.take_replies() == []
    now = clock.time()
    handled = [r.handle(query("uptime", ltime=now, query_id=i)) for i in range(3 * IDS_PER_TIME)]
    assert handled.count(True) == IDS_PER_TIME
    for t in range(now, now + 3 * QUERY_BUFFER):
        clock.witness(t)
        r.handle(query("uptime", ltime=t, query_id=1))
    assert len(r._seen) <= QUERY_BUFFER + 1


def test_filters_name_who_answers() -> None:
    r = responder(Keyring([OLD]))
    others = bytes([0]) + msgpack.packb(["serf-2"])
    us = bytes([0]) + msgpack.packb(["serf-2", "vx-a"])
    tag = bytes([1]) + msgpack.packb({"Tag": "role", "Expr": "(a+)+$"})
    ack = QUERY_FLAG_ACK
    assert r.handle(query("uptime", query_id=1, flags=ack, filters=(others,))) is True
    assert r.handle(query("uptime", query_id=2, flags=ack, filters=(tag,))) is True
    assert r.take_replies() == []  # passed on, not answered
    assert r.handle(query("uptime", query_id=3, flags=ack, filters=(us,))) is True
    assert len(r.take_replies()) == 1


def test_replies_go_only_to_a_member_at_the_querys_address() -> None:
    layers = NodeLayers(
        SerfLayer("vx-a", 4, Keyring([OLD])), None, lambda: 2, lambda: 0.0, lambda: 0.0
    )
    core = Membership(
        "vx-a", bytes([198, 18, 0, 1]), 7946, now=0.0, rng=random.Random(1), delegate=layers
    )
    vsn = bytes([1, 5, 2, 2, 5, 5])
    core.receive_packet(
        encode_message(Alive(1, "serf-1", SERF_ADDR, 7946, b"", vsn)), ("198.18.0.9", 7946), 0.1
    )
    core.datagrams_to_send()

    def ask(q: SerfQuery) -> list[tuple[tuple[str, int], bytes]]:
        packet = make_compound([encode_message(User(encode_serf(q)))])
        core.receive_packet(packet, ("198.18.0.9", 7946), 0.2)
        return [(addr, p) for addr, p in core.datagrams_to_send() if addr != ("198.18.0.9", 7946)]

    # An honest query: the answer goes to serf-1 where it is.
    core.receive_packet(
        make_compound([encode_message(User(encode_serf(query("_serf_list-keys"))))]),
        ("198.18.0.9", 7946),
        0.2,
    )
    sent = core.datagrams_to_send()
    assert [addr for addr, _ in sent] == [("198.18.0.9", 7946)]
    errors = core.stats.bad_packets
    # Aimed at a stranger (its address in the query, a member's name or not): nothing is sent.
    victim = bytes([203, 0, 113, 7])
    for i, source in enumerate(("serf-1", "nobody")):
        q = SerfQuery(
            9 + i, 7, victim, 53, source, (), QUERY_FLAG_ACK, 0, 10**9, "_serf_list-keys", b""
        )
        assert ask(q) == []
    assert core.stats.bad_packets == errors + 4  # an ack and an answer each, counted
