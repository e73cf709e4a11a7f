"""Tests of the Serf layer: codec against real serf 0.9.4 bytes, tags, clocks and intent rules."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vxnet.gossip._lamport import LamportClock
from vxnet.gossip._serf_codec import (
    META_MAX_SIZE,
    decode_serf,
    decode_tags,
    encode_serf,
    encode_tags,
)
from vxnet.gossip._serf_messages import (
    QUERY_FLAG_ACK,
    JoinIntent,
    LeaveIntent,
    PushPullEvent,
    PushPullEvents,
    SerfError,
    SerfMessage,
    SerfMessageType,
    SerfPushPull,
    SerfQuery,
    SerfQueryResponse,
    SerfUserEvent,
    UnhandledSerfMessage,
)
from vxnet.gossip._serf_state import MemberStatus, SerfState

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "serf_messages.json").read_text())
REAL = {name: bytes.fromhex(entry["hex"]) for name, entry in FIXTURES["messages"].items()}


# --- real serf bytes --------------------------------------------------------------------------

EXPECTED: dict[str, SerfMessage] = {
    "join_b": JoinIntent(1, "b"),
    "join_c": JoinIntent(4, "c"),
    "leave_b": LeaveIntent(2, "b", prune=False),
    "event_deploy": SerfUserEvent(1, "deploy", b"hello-vxnet", cc=True),
    "event_restart": SerfUserEvent(1, "restart", b"web", cc=False),
    "query_ping": SerfQuery(
        ltime=1,
        id=1813820890,
        addr=bytes([127, 0, 0, 1]),
        port=27947,
        source_node="b",
        filters=(),
        flags=QUERY_FLAG_ACK,
        relay_factor=0,
        timeout_ns=2_000_000_000,
        name="ping",
        payload=b"pong",
    ),
    "query_ack_a": SerfQueryResponse(1, 1813820890, "a", QUERY_FLAG_ACK, b""),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_message_decodes(name: str) -> None:
    assert decode_serf(REAL[name]) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_message_reencodes_byte_for_byte(name: str) -> None:
    # go-msgpack writes struct fields in name order, nil for nil slices: we match it exactly.
    assert encode_serf(decode_serf(REAL[name])) == REAL[name]


def test_real_push_pull_sent_on_join() -> None:
    state = decode_serf(REAL["pushpull_join_c"])
    assert isinstance(state, SerfPushPull)
    assert (state.ltime, state.event_ltime, state.query_ltime) == (1, 1, 1)
    assert state.status_ltimes == {"c": 0}
    assert state.left_members == ()
    assert len(state.events) == 512  # Serf sends its whole event ring, nil slots included
    assert all(slot is None for slot in state.events)


def test_real_push_pull_with_left_member_and_events() -> None:
    state = decode_serf(REAL["pushpull_reply_a"])
    assert isinstance(state, SerfPushPull)
    assert (state.ltime, state.event_ltime, state.query_ltime) == (3, 2, 1)
    assert state.status_ltimes == {"a": 0, "b": 2}
    assert state.left_members == ("b",)
    assert [slot for slot in state.events if slot is not None] == [
        PushPullEvents(1, (PushPullEvent("deploy", b"v1"), PushPullEvent("restart", b"web")))
    ]


def test_merging_real_push_pull() -> None:
    me = SerfState("c")
    me.notify_join("a")
    me.notify_join("b")
    assert me.merge_remote_state(REAL["pushpull_reply_a"], now=0.0) == []
    # LTime 3 witnessed as 2, then the left member's leave intent at 2 + 1 witnessed as 3.
    assert me.clock.time() == 4
    assert me.event_clock.time() == 2  # EventLTime 2 - 1 and the event at time 1
    assert me.query_clock.time() == 1
    assert (me.member_status("b"), me.status_ltime("b")) == (MemberStatus.LEAVING, 3)
    assert me.member_status("a") is MemberStatus.ALIVE
    me.notify_leave("b", now=1.0)
    assert me.member_status("b") is MemberStatus.LEFT
    # The real c, after merging this very state, broadcast its join intent at time 4.
    assert me.join_intent("c", now=1.0) == REAL["join_c"]


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_real_tags(name: str) -> None:
    entry = FIXTURES["tags"][name]
    assert decode_tags(bytes.fromhex(entry["hex"])) == entry["tags"]
    assert decode_tags(encode_tags(entry["tags"])) == entry["tags"]


# --- tags -------------------------------------------------------------------------------------

tag_text = st.text(max_size=20)


@given(st.dictionaries(tag_text, tag_text, max_size=8))
def test_tags_round_trip(tags: dict[str, str]) -> None:
    meta = encode_tags(tags)
    assert meta[0] == 0xFF
    assert decode_tags(meta) == tags


def test_tags_are_old_spec_raw_strings() -> None:
    meta = encode_tags({"k": "v" * 40})
    assert bytes([0xDA, 0, 40]) in meta  # raw16, never the newer str8 (0xd9) Go cannot read


def test_tags_size_limit() -> None:
    # 0xFF, fixmap, fixraw "k", raw16 header (3 bytes) and the value: 7 bytes of overhead.
    assert len(encode_tags({"k": "v" * (META_MAX_SIZE - 7)})) == META_MAX_SIZE
    with pytest.raises(ValueError, match="512-byte"):
        encode_tags({"k": "v" * (META_MAX_SIZE - 6)})


@pytest.mark.parametrize(
    ("meta", "tags"),
    [
        (b"", {"role": ""}),  # Serf reads empty meta as an empty role
        (b"web", {"role": "web"}),  # pre-protocol-3 meta is the role itself
        (b"\xff\x80", {}),
        (b"\xff\x81\xa1k\xc0", {"k": ""}),  # nil decodes to Go's zero string
        (b"\xff\x80trailing", {}),  # Go's decoder stops after the map
    ],
)
def test_tag_forms(meta: bytes, tags: dict[str, str]) -> None:
    assert decode_tags(meta) == tags


@pytest.mark.parametrize(
    "meta", [b"\xff", b"\xff\x01", b"\xff\x81\x01\xa1v", b"\xff\x81\xa1k\x01", b"\xff\x82\xa1k"]
)
def test_bad_tags(meta: bytes) -> None:
    with pytest.raises(SerfError, match="serf tags"):
        decode_tags(meta)


@given(st.binary(max_size=64))
def test_tag_decoding_raises_only_serf_error(meta: bytes) -> None:
    try:
        tags = decode_tags(meta)
    except SerfError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())


# --- Lamport clock ----------------------------------------------------------------------------


def test_lamport_clock() -> None:
    clock = LamportClock()
    assert clock.time() == 0
    assert clock.increment() == 1
    clock.witness(0)  # older: no change
    assert clock.time() == 1
    clock.witness(1)  # equal: move past it
    assert clock.time() == 2
    clock.witness(41)
    assert clock.time() == 42
    clock.witness(10)
    assert clock.time() == 42


@given(st.lists(st.integers(0, 1000), max_size=20))
def test_lamport_clock_passes_everything_witnessed(values: list[int]) -> None:
    clock = LamportClock()
    before = 0
    for v in values:
        clock.witness(v)
        assert clock.time() > v
        assert clock.time() >= before
        before = clock.time()


# --- codec ------------------------------------------------------------------------------------

u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
name = st.text(max_size=12)
raw = st.binary(max_size=24)
events = st.builds(PushPullEvents, u64, st.lists(st.builds(PushPullEvent, name, raw)).map(tuple))
messages: st.SearchStrategy[SerfMessage] = st.one_of(
    st.builds(LeaveIntent, u64, name, st.booleans()),
    st.builds(JoinIntent, u64, name),
    st.builds(
        SerfPushPull,
        u64,
        st.dictionaries(name, u64, max_size=5),
        st.lists(name, max_size=5).map(tuple),
        u64,
        st.lists(st.none() | events, max_size=5).map(tuple),
        u64,
    ),
    st.builds(SerfUserEvent, u64, name, raw, st.booleans()),
    st.builds(
        SerfQuery,
        u64,
        u32,
        raw,
        st.integers(0, 65535),
        name,
        st.lists(st.binary(min_size=1, max_size=8), max_size=3).map(tuple),
        u32,
        st.integers(0, 255),
        st.integers(-(2**63), 2**63 - 1),
        name,
        raw,
    ),
    st.builds(SerfQueryResponse, u64, u32, name, u32, raw),
    st.builds(
        UnhandledSerfMessage,
        st.sampled_from(
            [
                SerfMessageType.CONFLICT_RESPONSE,
                SerfMessageType.KEY_REQUEST,
                SerfMessageType.KEY_RESPONSE,
                SerfMessageType.RELAY,
            ]
        ),
        raw,
    ),
)


@given(messages)
def test_message_round_trip(msg: SerfMessage) -> None:
    data = encode_serf(msg)
    assert decode_serf(data) == msg
    assert encode_serf(decode_serf(data)) == data


def test_join_wire_form() -> None:
    # type byte 1, then {"LTime": 7, "Node": "n1"} with raw strings
    assert encode_serf(JoinIntent(7, "n1")) == bytes([1]) + msgpack.packb(
        {b"LTime": 7, b"Node": b"n1"}, use_bin_type=False
    )


def test_missing_fields_take_go_zero_values() -> None:
    assert decode_serf(b"\x00\x80") == LeaveIntent(0, "", prune=False)
    assert decode_serf(b"\x03\x81\xa4Name\xa1e") == SerfUserEvent(0, "e", b"", cc=False)
    assert decode_serf(b"\x01\x83\xa5LTime\x05\xa4Node\xa1n\xa5Extra\x01") == JoinIntent(5, "n")


def test_non_utf8_names_survive() -> None:
    data = b"\x01\x82\xa5LTime\x01\xa4Node\xa2\xff\xfe"
    msg = decode_serf(data)
    assert isinstance(msg, JoinIntent)
    assert encode_serf(msg) == data


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"\x0a\x80", "unknown serf message type 10"),
        (b"\x01", "bad msgpack"),
        (b"\x01\x01", "expected a map"),
        (b"\x01\x81\xa5LTime\xff", "LTime"),  # negative
        (b"\x01\x81\xa5LTime\xa1x", "LTime"),
        (b"\x00\x81\xa5Prune\x01", "Prune"),
        (b"\x04\x81\xa4Port\xce\x00\x01\x00\x00", "Port"),  # over 16 bits
        (b"\x02\x81\xacStatusLTimes\x81\xa1a\xa1b", "push-pull"),
        (b"\x02\x81\xa6Events\x91\x01", "event slot"),
    ],
)
def test_bad_messages(data: bytes, match: str) -> None:
    with pytest.raises(SerfError, match=match):
        decode_serf(data)


@given(st.binary(max_size=80))
def test_decoding_random_bytes_raises_only_serf_error(data: bytes) -> None:
    with contextlib.suppress(SerfError):
        decode_serf(data)


@given(st.integers(0, 5), st.binary(max_size=80))
def test_decoding_random_bodies_raises_only_serf_error(mtype: int, body: bytes) -> None:
    with contextlib.suppress(SerfError):
        decode_serf(bytes([mtype]) + body)


@given(
    st.integers(0, 5),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=4),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.sampled_from([b"LTime", b"Node", b"Events"]), children)
        ),
        max_leaves=8,
    ),
)
def test_decoding_wrongly_typed_fields_raises_only_serf_error(mtype: int, body: Any) -> None:
    with contextlib.suppress(SerfError):
        decode_serf(bytes([mtype]) + msgpack.packb(body, use_bin_type=False))


def test_encoding_refuses_numbers_go_cannot_hold() -> None:
    with pytest.raises(ValueError, match="LTime"):
        encode_serf(JoinIntent(-1, "n"))
    with pytest.raises(ValueError, match="Port"):
        encode_serf(SerfQuery(1, 1, b"", 70000, "n", (), 0, 0, 0, "q", b""))


# --- state: intents ---------------------------------------------------------------------------


def test_initial_state_looks_like_a_fresh_serf() -> None:
    me = SerfState("me")
    assert me.members() == {"me": MemberStatus.ALIVE}
    assert (me.clock.time(), me.event_clock.time(), me.query_clock.time()) == (1, 1, 1)
    assert decode_serf(me.join_intent("me", now=0.0)) == JoinIntent(1, "me")  # as serf's join_b
    assert me.clock.time() == 2
    assert me.status_ltime("me") == 1


def test_intents_for_known_member_follow_the_table() -> None:
    me = SerfState("me")
    me.notify_join("n")
    join = encode_serf(JoinIntent(5, "n"))
    assert me.receive(join, now=0.0) == [join]  # newer: accept and rebroadcast
    assert me.clock.time() == 6
    assert me.receive(join, now=0.0) == []  # seen
    assert me.receive(encode_serf(LeaveIntent(4, "n")), now=0.0) == []  # older than status
    assert me.member_status("n") is MemberStatus.ALIVE
    leave = encode_serf(LeaveIntent(9, "n"))
    assert me.receive(leave, now=0.0) == [leave]
    assert (me.member_status("n"), me.status_ltime("n")) == (MemberStatus.LEAVING, 9)
    again = encode_serf(LeaveIntent(10, "n"))
    assert me.receive(again, now=0.0) == [again]  # leaving stays leaving, time moves on
    assert me.status_ltime("n") == 10
    rejoin = encode_serf(JoinIntent(11, "n"))
    assert me.receive(rejoin, now=0.0) == [rejoin]
    assert me.member_status("n") is MemberStatus.ALIVE


def test_leave_of_failed_member_makes_it_left() -> None:
    me = SerfState("me")
    me.notify_join("n")
    me.notify_leave("n", now=1.0)
    assert me.member_status("n") is MemberStatus.FAILED
    assert me.receive(encode_serf(JoinIntent(3, "n")), now=2.0) != []  # join keeps it failed
    assert me.member_status("n") is MemberStatus.FAILED
    me.receive(encode_serf(LeaveIntent(4, "n")), now=2.0)
    assert me.member_status("n") is MemberStatus.LEFT
    assert decode_serf(me.local_state(join=False)) == SerfPushPull(
        ltime=me.clock.time(),
        status_ltimes={"me": 0, "n": 4},
        left_members=("n",),
        event_ltime=1,
        events=(),
        query_ltime=1,
    )


def test_graceful_leave_then_memberlist_leave_is_left() -> None:
    me = SerfState("me")
    me.notify_join("n")
    me.receive(encode_serf(LeaveIntent(2, "n")), now=0.0)
    me.notify_leave("n", now=1.0)
    assert me.member_status("n") is MemberStatus.LEFT
    me.notify_join("n")  # back again
    assert me.member_status("n") is MemberStatus.ALIVE


def test_prune_erases_the_member() -> None:
    me = SerfState("me")
    me.notify_join("n")
    me.notify_leave("n", now=0.0)
    me.receive(encode_serf(LeaveIntent(3, "n", prune=True)), now=0.0)
    assert me.member_status("n") is None


def test_intents_before_memberlist_are_buffered() -> None:
    me = SerfState("me")
    leave = encode_serf(LeaveIntent(4, "n"))
    assert me.receive(leave, now=0.0) == [leave]
    assert me.receive(leave, now=0.0) == []
    assert me.receive(encode_serf(JoinIntent(3, "n")), now=0.0) == []  # older than buffered
    assert me.member_status("n") is None
    me.notify_join("n")
    assert (me.member_status("n"), me.status_ltime("n")) == (MemberStatus.LEAVING, 4)


def test_buffered_intents_expire() -> None:
    me = SerfState("me", recent_intent_timeout=10.0)
    me.receive(encode_serf(JoinIntent(4, "n")), now=100.0)
    assert me.next_deadline() == 110.0
    me.tick(110.0)
    me.tick(110.5)
    assert me.next_deadline() is None
    me.notify_join("n")
    assert me.status_ltime("n") == 0


def test_left_and_failed_members_are_reaped() -> None:
    me = SerfState("me", tombstone_timeout=50.0, reconnect_timeout=20.0)
    for node in ("gone", "dead"):
        me.notify_join(node)
    me.receive(encode_serf(LeaveIntent(2, "gone")), now=0.0)
    me.notify_leave("gone", now=10.0)
    me.notify_leave("dead", now=10.0)
    assert me.next_deadline() == 30.0
    me.tick(31.0)
    assert me.members() == {"me": MemberStatus.ALIVE, "gone": MemberStatus.LEFT}
    me.tick(61.0)
    assert me.members() == {"me": MemberStatus.ALIVE}


def test_leave_intent_about_us_is_refuted() -> None:
    me = SerfState("me")
    me.join_intent("me", now=0.0)
    out = me.receive(encode_serf(LeaveIntent(7, "me")), now=0.0)
    assert len(out) == 1
    refutation = decode_serf(out[0])
    assert isinstance(refutation, JoinIntent)
    assert refutation.node == "me"
    assert refutation.ltime > 7
    assert me.member_status("me") is MemberStatus.ALIVE
    assert me.status_ltime("me") == refutation.ltime
    # An older leave is simply stale.
    assert me.receive(encode_serf(LeaveIntent(3, "me")), now=0.0) == []


def test_our_own_leave_is_not_refuted() -> None:
    me = SerfState("me")
    first = decode_serf(me.leave_intent("me", now=0.0))
    assert first == LeaveIntent(1, "me")
    assert me.member_status("me") is MemberStatus.LEAVING
    later = encode_serf(LeaveIntent(5, "me"))
    assert me.receive(later, now=0.0) == [later]


def test_push_pull_saying_we_left_is_refuted() -> None:
    me = SerfState("me")
    other = SerfState("other")
    other.notify_join("me")
    other.receive(encode_serf(LeaveIntent(4, "me")), now=0.0)
    other.notify_leave("me", now=0.0)
    assert other.member_status("me") is MemberStatus.LEFT
    out = me.merge_remote_state(other.local_state(join=True), now=0.0)
    assert [type(decode_serf(b)) for b in out] == [JoinIntent]
    assert me.member_status("me") is MemberStatus.ALIVE
    other.notify_join("me")
    assert other.receive(out[0], now=0.0) == out
    assert other.status_ltime("me") == me.status_ltime("me")


def test_two_states_converge_through_push_pull() -> None:
    a, b = SerfState("a"), SerfState("b")
    a.notify_join("b")
    b.notify_join("a")
    b.receive(a.join_intent("a", now=0.0), now=0.0)
    a.receive(b.join_intent("b", now=0.0), now=0.0)
    a.notify_join("c")
    a.receive(encode_serf(JoinIntent(9, "c")), now=0.0)
    b.notify_join("c")
    b.merge_remote_state(a.local_state(join=False), now=0.0)
    assert b.status_ltime("c") == 9
    assert b.clock.time() >= 9


def test_user_events_move_clocks_and_queries_are_passed_on_and_acked() -> None:
    me = SerfState("me")
    assert me.receive(REAL["event_deploy"], now=0.0) == []
    assert me.event_clock.time() == 2
    assert me.receive(REAL["query_ping"], now=0.0) == [REAL["query_ping"]]
    assert me.receive(REAL["query_ping"], now=0.0) == []  # once
    assert me.query_clock.time() == 2
    (ack,) = me.queries.take_replies()
    assert decode_serf(ack.payload) == SerfQueryResponse(1, 1813820890, "me", QUERY_FLAG_ACK, b"")
    assert me.receive(REAL["query_ack_a"], now=0.0) == []
    assert me.receive(b"\x09anything", now=0.0) == []
    assert me.receive(b"", now=0.0) == []
    assert me.clock.time() == 1


def test_real_intents_drive_state() -> None:
    me = SerfState("a")
    me.notify_join("b")
    assert me.receive(REAL["join_b"], now=0.0) == [REAL["join_b"]]
    assert me.receive(REAL["leave_b"], now=0.0) == [REAL["leave_b"]]
    assert (me.member_status("b"), me.status_ltime("b")) == (MemberStatus.LEAVING, 2)


def test_merge_refuses_what_is_not_a_push_pull() -> None:
    me = SerfState("me")
    with pytest.raises(SerfError, match="type prefix"):
        me.merge_remote_state(REAL["join_b"], now=0.0)
    with pytest.raises(SerfError, match="type prefix"):
        me.merge_remote_state(b"", now=0.0)
    with pytest.raises(SerfError):
        me.merge_remote_state(b"\x02\x01", now=0.0)


# --- state: order does not matter -------------------------------------------------------------

intent_lists = st.lists(
    st.tuples(st.sampled_from(["n1", "n2", "n3"]), st.booleans(), st.integers(0, 30)),
    max_size=12,
)


def _apply(intents: list[tuple[str, bool, int]], *, known: bool) -> SerfState:
    state = SerfState("me")
    nodes = ("n1", "n2", "n3")
    if known:
        for node in nodes:
            state.notify_join(node)
    for node, is_join, ltime in intents:
        msg = JoinIntent(ltime, node) if is_join else LeaveIntent(ltime, node)
        state.receive(encode_serf(msg), now=0.0)
    if not known:
        for node in nodes:
            state.notify_join(node)
    return state


@given(intent_lists, st.randoms(use_true_random=False), st.booleans())
def test_any_interleaving_gives_the_same_status_times(
    intents: list[tuple[str, bool, int]], rng: Any, known: bool
) -> None:
    shuffled = list(intents)
    rng.shuffle(shuffled)
    first, second = _apply(intents, known=known), _apply(shuffled, known=known)
    for node in ("n1", "n2", "n3"):
        latest = max((t for n, _, t in intents if n == node), default=0)
        assert first.status_ltime(node) == second.status_ltime(node) == latest
    # With one intent per (node, time), the status is that of the newest intent, in any order.
    if len({(n, t) for n, _, t in intents}) == len(intents):
        assert first.members() == second.members()
