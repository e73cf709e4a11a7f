"""The replicated store's core: merge laws, anti-entropy, expiry, caps and hostile bytes."""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Any, Final

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vxnet.gossip import _store
from vxnet.gossip._errors import StoreError
from vxnet.gossip._hlc import HybridClock
from vxnet.gossip._store import Store
from vxnet.gossip._store_codec import delta_key
from vxnet.gossip._store_messages import FRAME_MAX, STORE_MAGIC

if TYPE_CHECKING:
    from vxnet.gossip._store_records import Record, Version

T0 = 1_700_000_000.0
NODES = ("a", "b", "c")
KEYS = ("svc/web", "svc/db", "overlay/n1", "dns/x")


def exchange(initiator: Store, responder: Store, wall: float) -> int:
    """One full anti-entropy exchange; returns the bytes both sides sent."""
    total = 0
    request: bytes | None = initiator.sync_request()
    while request is not None:
        reply = responder.handle_sync(request, wall)
        total += len(request) + len(reply)
        request = initiator.sync_step(reply, wall)
    return total


def converge(stores: list[Store], wall: float) -> None:
    """Everyone syncs with the first store, twice round: then all hold the same records."""
    for _ in range(2):
        for other in stores[1:]:
            exchange(other, stores[0], wall)


def raw_delta(key: Any, value: Any, hlc: Any, writer: Any) -> bytes:
    blob = value if value is None or isinstance(value, bytes) else msgpack.packb(value)
    packed: bytes = msgpack.packb([1, [key, blob, hlc, writer]])
    return bytes([STORE_MAGIC]) + packed


def raw_frame(body: Any) -> bytes:
    packed: bytes = msgpack.packb(body)
    return struct.pack(">BI", STORE_MAGIC, len(packed)) + packed


def snapshot(store: Store) -> tuple[list[Record], bytes]:
    return store.records(), store.sync_request()


# --- local writes and reads ---------------------------------------------------------------------


def test_put_get_delete_and_items() -> None:
    s = Store("a")
    delta = s.put("svc/web", {"ip": "10.0.0.1", "port": 80}, T0)
    assert delta[0] == STORE_MAGIC
    assert delta_key(delta) == "svc/web"
    s.put("svc/db", {"ip": "10.0.0.2"}, T0)
    s.put("dns/x", {"a": [1, 2]}, T0)
    record = s.get("svc/web")
    assert record is not None
    assert record.value == {"ip": "10.0.0.1", "port": 80}
    assert record.owner == record.version.writer == "a"
    assert [r.key for r in s.items("svc/")] == ["svc/db", "svc/web"]
    assert s.delete("svc/web", T0 + 1) is not None
    assert s.get("svc/web") is None
    assert s.delete("svc/web", T0 + 2) is None
    assert s.delete("svc/none", T0 + 2) is None
    assert [r.key for r in s.items()] == ["dns/x", "svc/db"]
    assert [(r.key, r.is_tombstone) for r in s.records()] == [
        ("dns/x", False),
        ("svc/db", False),
        ("svc/web", True),
    ]


def test_values_are_normalised_and_read_only() -> None:
    s = Store("a")
    s.put("k", {"t": (1, 2)}, T0)
    record = s.get("k")
    assert record is not None
    assert record.value == {"t": [1, 2]}  # what every peer will see
    with pytest.raises(TypeError):
        record.value["t"] = 3  # type: ignore[index]


@pytest.mark.parametrize(
    "key", ["a", "a/b", "svc/web.marathon/1", "a/./b", "x" * 255, "A-Z_0~9!", "a:b/c@d"]
)
def test_good_keys(key: str) -> None:
    Store("a").put(key, {}, T0)


@pytest.mark.parametrize(
    "key",
    ["", "/a", "a/", "a//b", "..", "a/../b", "a b", "é", "x" * 256, "a\n", "a\x00b"],
)
def test_bad_keys_are_local_misuse(key: str) -> None:
    s = Store("a")
    with pytest.raises(ValueError, match="key"):
        s.put(key, {}, T0)
    with pytest.raises(ValueError, match="key"):
        s.delete(key, T0)
    with pytest.raises(StoreError):
        Store("b").receive(raw_delta(key, {}, 1 << 16, "a"), T0)


@pytest.mark.parametrize(
    "value",
    [{"a": object()}, {1: 2}, {"a": {1: 2}}, {"a": 1 << 70}, {"a": "x" * 100}],
)
def test_bad_values_are_local_misuse(value: Any) -> None:
    s = Store("a", max_record_bytes=64)
    with pytest.raises(ValueError, match="value"):
        s.put("k", value, T0)
    assert s.records() == []


def test_size_cap_is_on_the_value_encoding() -> None:
    s = Store("a", max_record_bytes=64)
    fits = {"a": "x" * 59}  # map, key, str8 header: 5 bytes
    assert len(msgpack.packb(fits)) == 64
    delta = s.put("k", fits, T0)
    with pytest.raises(ValueError, match="max_record_bytes"):
        s.put("k", {"a": fits["a"] + "x"}, T0)
    small = Store("b", max_record_bytes=63)
    with pytest.raises(StoreError, match="max_record_bytes"):
        small.receive(delta, T0)
    assert small.records() == []
    assert small.stats.deltas_rejected == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_record_bytes": 0}, "max_record_bytes"),
        ({"tombstone_ttl": 0.0}, "tombstone_ttl"),
        ({"tombstone_ttl": math.inf}, "tombstone_ttl"),
        ({"tombstone_ttl": 10.0, "refresh_interval": 10.0}, "refresh_interval"),
        ({"owner_grace": -1.0}, "owner_grace"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Store("a", **kwargs)


def test_bad_node_name() -> None:
    with pytest.raises(ValueError, match="node"):
        Store("")


# --- the hybrid clock ---------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["now", "observe"]),
            st.floats(0, 120),
            st.integers(0, 200_000),
        ),
        max_size=60,
    )
)
def test_hlc_is_monotonic_and_beats_what_it_observed(steps: list[tuple[str, float, int]]) -> None:
    clock = HybridClock()
    last = 0
    seen = 0
    for kind, offset, remote_ms in steps:
        wall = T0 + offset  # walls jump back and forth
        if kind == "observe":
            hlc = (round(T0 * 1000) + remote_ms) << 16 | 7
            clock.observe(hlc, T0 + 200)
            seen = max(seen, hlc)
            continue
        stamp = clock.now(wall)
        assert stamp > last
        assert stamp > seen
        assert stamp >> 16 >= round(wall * 1000)  # never behind the wall
        last = stamp


def test_hlc_follows_the_wall_and_counts_within_a_millisecond() -> None:
    clock = HybridClock()
    first = clock.now(T0)
    assert first == round(T0 * 1000) << 16
    assert clock.now(T0) == first + 1
    assert clock.now(T0 - 5) == first + 2
    assert clock.now(T0 + 0.001) == (round(T0 * 1000) + 1) << 16


def test_hlc_refuses_a_peer_too_far_ahead() -> None:
    clock = HybridClock(max_drift=60.0)
    wall_ms = round(T0 * 1000)
    clock.observe((wall_ms + 60_000) << 16, T0)
    with pytest.raises(StoreError, match="ahead"):
        clock.observe((wall_ms + 60_001) << 16, T0)
    with pytest.raises(StoreError, match="range"):
        clock.observe(1 << 64, T0)
    assert clock.last == (wall_ms + 60_000) << 16
    with pytest.raises(ValueError, match="wall"):
        clock.now(math.nan)


def test_a_delta_from_a_broken_clock_is_refused_and_changes_nothing() -> None:
    broken = Store("z")
    future = broken.put("k", {"v": 1}, T0 + 61)
    fine = broken.put("j", {"v": 1}, T0)  # its clock is past T0 + 61 now: also refused
    s = Store("a")
    s.put("k", {"v": 0}, T0)
    before = snapshot(s)
    for delta in (future, fine):
        with pytest.raises(StoreError, match="max drift"):
            s.receive(delta, T0)
    assert snapshot(s) == before
    assert s.stats.deltas_rejected == 2
    assert s.receive(future, T0 + 2) != []  # within 60 s of the wall now
    remote = s.get("k")
    assert remote is not None
    assert s.clock.last >= remote.version.hlc
    s.put("k", {"v": 2}, T0 + 2)
    local = s.get("k")
    assert local is not None
    assert local.version > remote.version  # a local write beats everything the store has seen


# --- gossip deltas and merge laws ---------------------------------------------------------------

op_strategy = st.tuples(
    st.integers(0, 2),  # writer
    st.sampled_from(["put", "put", "delete", "hear"]),
    st.sampled_from(KEYS),
    st.integers(0, 3),  # value, or which delta to hear
    st.floats(0, 0.01),  # time step
)


def run_history(ops: list[tuple[int, str, str, int, float]]) -> tuple[list[bytes], float]:
    """Three writers writing, deleting and sometimes hearing each other; all deltas produced."""
    writers = [Store(n) for n in NODES]
    deltas: list[bytes] = []
    wall = T0
    for who, kind, key, n, dt in ops:
        wall += dt
        if kind == "put":
            deltas.append(writers[who].put(key, {"v": n, "by": who}, wall))
        elif kind == "delete":
            delta = writers[who].delete(key, wall)
            if delta is not None:
                deltas.append(delta)
        elif deltas:
            deltas.extend(writers[who].receive(deltas[n % len(deltas)], wall))
    return deltas, wall


@settings(max_examples=60)
@given(
    st.lists(op_strategy, min_size=1, max_size=30),
    st.randoms(use_true_random=False),
)
def test_deltas_in_any_order_with_duplicates_give_identical_stores(
    ops: list[tuple[int, str, str, int, float]], rnd: Any
) -> None:
    deltas, wall = run_history(ops)
    in_order = Store("x")
    for delta in deltas:
        in_order.receive(delta, wall)
    shuffled = Store("y")
    jumbled = deltas + rnd.choices(deltas, k=len(deltas)) if deltas else []
    rnd.shuffle(jumbled)
    for delta in jumbled:
        shuffled.receive(delta, wall)
    assert shuffled.records() == in_order.records()
    assert shuffled.sync_request() == in_order.sync_request()  # same digests
    # Idempotent: hearing everything again changes nothing and spreads nothing.
    assert [d for delta in deltas for d in in_order.receive(delta, wall)] == []
    # Associative: merging two halves by sync is the same as hearing everything.
    left, right = Store("l"), Store("r")
    half = len(jumbled) // 2
    for delta in jumbled[:half]:
        left.receive(delta, wall)
    for delta in jumbled[half:]:
        right.receive(delta, wall)
    exchange(left, right, wall)
    assert left.records() == right.records() == in_order.records()


def test_merge_is_last_writer_wins_and_rebroadcasts_only_news() -> None:
    a, b, c = Store("a"), Store("b"), Store("c")
    old = a.put("k", {"v": "a"}, T0)
    new = b.put("k", {"v": "b"}, T0 + 1)
    assert c.receive(new, T0 + 1) != []
    assert c.receive(old, T0 + 1) == []
    assert c.receive(new, T0 + 1) == []
    record = c.get("k")
    assert record is not None
    assert (record.value, record.owner) == ({"v": "b"}, "b")
    assert c.stats.records_merged == 1
    assert c.stats.deltas_received == 3


def test_equal_versions_with_different_values_still_converge() -> None:
    # Two instances of one node whose clocks restarted: same (hlc, writer), different records.
    one = Store("w").put("k", {"v": 1}, T0)
    two = Store("w").put("k", {"v": 2}, T0)
    x, y = Store("x"), Store("y")
    x.receive(one, T0)
    x.receive(two, T0)
    y.receive(two, T0)
    y.receive(one, T0)
    assert x.records() == y.records()
    assert exchange(x, y, T0) == len(x.sync_request()) + len(raw_frame([2, 4, [], []]))


def test_changes_are_drained_coalesced_and_only_what_readers_see() -> None:
    s = Store("a")
    s.put("k", {"v": 1}, T0)
    s.put("k", {"v": 2}, T0)
    s.put("gone", {"v": 1}, T0)
    s.delete("gone", T0)
    changes = s.changes()
    assert [(c.key, c.old, c.new.value) for c in changes] == [("k", None, {"v": 2})]
    assert s.changes() == []
    peer = Store("b")
    peer.receive(s.put("k", {"v": 2}, T0 + 1), T0 + 1)  # same value: a re-stamp for readers
    peer.changes()
    assert peer.receive(s.put("k", {"v": 2}, T0 + 2), T0 + 2) != []
    assert peer.changes() == []
    delete = s.delete("k", T0 + 3)
    assert delete is not None
    peer.receive(delete, T0 + 3)
    [change] = peer.changes()
    assert change.old is not None
    assert change.old.value == {"v": 2}
    assert change.new.is_tombstone


# --- anti-entropy -------------------------------------------------------------------------------

store_ops = st.lists(
    st.tuples(st.sampled_from(["put", "put", "delete"]), st.integers(0, 40), st.integers(0, 3)),
    max_size=40,
)


@settings(max_examples=40)
@given(st.lists(store_ops, min_size=2, max_size=4), st.integers(0, 3), st.data())
def test_sync_alone_converges_from_divergent_states(
    histories: list[list[tuple[str, int, int]]], shared: int, data: st.DataObject
) -> None:
    stores = [Store(f"n{i}") for i in range(len(histories))]
    wall = T0
    for i, history in enumerate(histories):
        for kind, k, v in history:
            wall += 0.001
            key = f"k/{k}"
            if kind == "put":
                delta: bytes | None = stores[i].put(key, {"v": v, "n": i}, wall)
            else:
                delta = stores[i].delete(key, wall)
            if delta is not None and v < shared:  # some deltas did get around
                stores[(i + 1) % len(stores)].receive(delta, wall)
    # The expected outcome, by last-writer-wins over every record anyone holds.
    best: dict[str, Record] = {}
    for store in stores:
        for record in store.records():
            if record.key not in best or best[record.key].version < record.version:
                best[record.key] = record
    expected = [best[key] for key in sorted(best)]
    # One exchange makes a pair equal, whoever initiates.
    i, j = data.draw(st.permutations(range(len(stores))))[:2]
    exchange(stores[i], stores[j], wall)
    assert stores[i].records() == stores[j].records()
    converge(stores, wall)
    for s in stores:
        assert s.records() == expected
    # Now nothing is left to exchange: the digest frame and an empty reply.
    request = stores[0].sync_request()
    reply = stores[1].handle_sync(request, wall)
    assert stores[0].sync_step(reply, wall) is None
    assert reply == raw_frame([2, msgpack.unpackb(request[5:])[1], [], []])


def test_sync_bytes_grow_with_the_difference_not_the_store() -> None:
    a, b = Store("a"), Store("b")
    for i in range(10_000):
        value = {"ip": f"10.0.{i % 256}.{i // 256}", "port": 8080, "task": f"task-{i}"}
        b.receive(a.put(f"svc/web/task-{i}", value, T0), T0)
    assert a.records() == b.records()
    diff = [a.put(f"svc/new/task-{i}", {"ip": "10.1.0.1", "n": i}, T0 + 1) for i in range(20)]
    diff += [b.put(f"svc/web/task-{i * 97}", {"ip": "10.2.0.1", "n": i}, T0 + 1) for i in range(20)]
    diff += [d for i in range(10) if (d := a.delete(f"svc/web/task-{i * 89 + 1}", T0 + 1))]
    assert len(diff) == 50
    diff_bytes = sum(map(len, diff))
    digest_frame = len(a.sync_request())
    a.stats.sync_bytes_sent = 0
    total = exchange(a, b, T0 + 2)
    assert a.records() == b.records()
    assert total < 20 * diff_bytes + digest_frame
    assert total == a.stats.sync_bytes_sent + b.stats.sync_bytes_sent
    assert total == a.stats.sync_bytes_received + b.stats.sync_bytes_received
    # Equal stores: only the digest frame and an empty reply.
    request = a.sync_request()
    reply = b.handle_sync(request, T0 + 2)
    assert a.sync_step(reply, T0 + 2) is None
    assert len(reply) < 16
    # b = 12 for 10,000 records: header, kind, b, bin16 header, 4,096 digests.
    assert len(request) == digest_frame == 5 + 1 + 1 + 1 + 3 + 8 * 4096


def test_frames_over_the_cap_are_split_over_exchanges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_store, "_FRAME_ROOM", 2_000)
    a, b = Store("a"), Store("b")
    for i in range(150):
        a.put(f"a/{i}", {"pad": "x" * 40}, T0)
        b.put(f"b/{i}", {"pad": "y" * 40}, T0)
    rounds = 0
    while a.records() != b.records():
        rounds += 1
        assert rounds < 40
        request: bytes | None = a.sync_request()
        while request is not None:
            reply = b.handle_sync(request, T0)
            assert len(reply) < 2_000 + 64
            request = a.sync_step(reply, T0)
            assert request is None or len(request) < 2_000 + 64
    assert rounds > 1
    assert len(a.items()) == 300


def test_initiator_needs_no_state_and_frames_are_checked() -> None:
    a, b = Store("a"), Store("b")
    a.put("k", {"v": 1}, T0)
    b.put("j", {"v": 1}, T0)
    reply = b.handle_sync(a.sync_request(), T0)
    with pytest.raises(StoreError, match="unexpected"):
        b.handle_sync(reply, T0)  # a reply is not a request
    with pytest.raises(StoreError, match="unexpected"):
        a.sync_step(a.sync_request(), T0)  # nor a request a reply
    push = a.sync_step(reply, T0)
    assert push is not None
    last = b.handle_sync(push, T0)
    assert a.sync_step(last, T0) is None
    assert a.records() == b.records()
    assert a.stats.sync_frames_rejected == b.stats.sync_frames_rejected == 1


def test_a_push_with_a_bad_wanted_key_merges_nothing() -> None:
    a, b = Store("a"), Store("b")
    delta = a.put("k", {"v": 1}, T0)
    record = msgpack.unpackb(delta[1:])[1]
    with pytest.raises(StoreError, match="wanted"):
        b.handle_sync(raw_frame([3, [record], ["ok", "a//b"]]), T0)
    assert b.records() == []
    b.handle_sync(raw_frame([3, [record], ["ok"]]), T0)
    assert b.records() == a.records()


def test_frame_length() -> None:
    s = Store("a")
    request = s.sync_request()
    assert s.frame_length(request[:5]) == len(request)
    with pytest.raises(StoreError, match="cap"):
        s.frame_length(struct.pack(">BI", STORE_MAGIC, FRAME_MAX))
    with pytest.raises(StoreError, match="not a store frame"):
        s.frame_length(b"\x00\x00\x00\x00\x01")
    with pytest.raises(ValueError, match="5 bytes"):
        s.frame_length(b"\x56\x00")
    with pytest.raises(StoreError, match="header says"):
        s.handle_sync(request[:-1], T0)


# --- expiry, refresh and no resurrection --------------------------------------------------------


def test_refresh_restamps_own_live_records() -> None:
    s = Store("a", tombstone_ttl=100.0)
    assert s.refresh_interval == 25.0
    assert s.next_deadline() == math.inf
    s.put("k", {"v": 1}, T0)
    s.changes()
    assert s.next_deadline() == pytest.approx(T0 + 25)
    assert s.tick(T0 + 24.999) == []
    [delta] = s.tick(s.next_deadline())
    record = s.get("k")
    assert record is not None
    assert record.value == {"v": 1}
    assert record.version.hlc >> 16 == round((T0 + 25) * 1000)
    assert s.next_deadline() == pytest.approx(T0 + 50)
    assert s.changes() == []  # readers see nothing new
    assert s.stats.records_refreshed == 1
    peer = Store("b", tombstone_ttl=100.0)
    assert peer.receive(delta, T0 + 25) != []
    assert peer.next_deadline() == pytest.approx(T0 + 125)  # b does not refresh a's record
    peer.changes()
    assert peer.tick(T0 + 125) == []
    assert peer.get("k") is None
    assert peer.records() == []
    [gone] = peer.changes()
    assert gone.new.is_tombstone
    assert gone.new.version == record.version
    assert peer.stats.records_expired == 1


def test_tombstones_are_collected_after_the_ttl() -> None:
    s = Store("a", tombstone_ttl=100.0)
    s.put("k", {"v": 1}, T0)
    s.delete("k", T0 + 10)
    assert s.next_deadline() == pytest.approx(T0 + 110)
    s.tick(T0 + 109.999)
    assert len(s.records()) == 1
    s.tick(T0 + 110)
    assert s.records() == []
    assert s.stats.tombstones_collected == 1
    assert s.next_deadline() == math.inf


def test_records_of_an_earlier_life_are_not_reasserted() -> None:
    before = Store("a", tombstone_ttl=100.0)
    delta = before.put("k", {"v": 1}, T0)
    after = Store("a", tombstone_ttl=100.0)  # the node restarted with an empty store
    after.receive(delta, T0 + 1)
    assert after.tick(T0 + 99) == []
    after.tick(T0 + 100)
    assert after.records() == []


def test_stale_records_are_ignored_on_receipt() -> None:
    a = Store("a", tombstone_ttl=100.0)
    delta = a.put("k", {"v": 1}, T0)
    b = Store("b", tombstone_ttl=100.0)
    assert b.receive(delta, T0 + 100) == []
    assert b.records() == []
    assert b.stats.records_stale == 1
    assert b.stats.deltas_rejected == 0


def test_a_wall_clock_stepping_back_changes_nothing() -> None:
    s = Store("a", tombstone_ttl=100.0)
    delta = Store("b").put("k", {"v": 1}, T0)
    s.tick(T0 + 100)
    assert s.receive(delta, T0) == []  # our now is still T0 + 100: it is stale


def test_a_deleted_key_never_comes_back_from_a_stale_copy() -> None:
    ttl = 100.0
    a, b, c = (Store(n, tombstone_ttl=ttl) for n in NODES)
    put = a.put("k", {"v": 1}, T0)
    b.receive(put, T0)
    c.receive(put, T0)  # c will miss the delete and be away past its collection
    delete = b.delete("k", T0 + 10)
    assert delete is not None
    a.receive(delete, T0 + 10)
    for s in (a, b):
        s.tick(T0 + 110)
        assert s.records() == []
    for s in (a, b):
        assert s.receive(put, T0 + 111) == []
        exchange(c, s, T0 + 111)
        exchange(s, c, T0 + 111)
        assert s.get("k") is None
    c.tick(T0 + 111)
    assert c.records() == []


SCHEDULE_KEYS = KEYS[:2]
schedule_op = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 2), st.sampled_from(SCHEDULE_KEYS), st.just(0)),
    st.tuples(st.just("delete"), st.integers(0, 2), st.sampled_from(SCHEDULE_KEYS), st.just(0)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("hear"), st.integers(0, 2), st.integers(0, 2), st.integers(0, 50)),
    st.tuples(st.just("tick"), st.integers(0, 2), st.just(""), st.just(0)),
    st.tuples(st.just("wait"), st.sampled_from([0, 1, 30, 60, 110]), st.just(""), st.just(0)),
)
Schedule = list[tuple[str, int, Any, int]]
PUT_A: Final = ("put", 0, "svc/web", 0)
DELETE_A: Final = ("delete", 0, "svc/web", 0)


@settings(max_examples=150)
@given(st.lists(schedule_op, max_size=50))
# A stale delta replayed after its tombstone was collected.
@example([PUT_A, DELETE_A, ("wait", 110, "", 0), ("tick", 0, "", 0), ("hear", 0, 0, 0)])
# A copy that missed the delete, synced back before and after the collection.
@example(
    [
        PUT_A,
        ("sync", 1, 0, 0),
        DELETE_A,
        *[("wait", 60, "", 0), ("tick", 0, "", 0), ("sync", 1, 0, 0)] * 2,
    ]
)
# A node that holds someone else's record must not re-assert it.
@example([PUT_A, ("sync", 1, 0, 0), ("wait", 30, "", 0), ("tick", 1, "", 0)])
def test_no_resurrection_under_generated_schedules(ops: Schedule) -> None:
    ttl = 100.0
    stores = [Store(n, tombstone_ttl=ttl) for n in NODES]
    sent: list[list[bytes]] = [[] for _ in stores]  # every delta each store ever sent
    highest: list[dict[str, Version]] = [{} for _ in stores]
    deleted: dict[str, list[Version]] = {}
    wall = T0

    def check() -> None:
        for s, seen in zip(stores, highest, strict=True):
            for record in s.records():
                # A store never goes back on a key, even after collecting its tombstone.
                assert record.version >= seen.get(record.key, record.version)
                seen[record.key] = record.version
                # Only the node that wrote a value re-asserts it.
                assert record.value is None or record.value["by"] == record.owner

    for i, (kind, x, y, n) in enumerate(ops):
        if kind == "put":
            sent[x].append(stores[x].put(y, {"by": NODES[x], "op": i}, wall))
        elif kind == "delete":
            delta = stores[x].delete(y, wall)
            if delta is not None:
                sent[x].append(delta)
                held = stores[x].records()
                deleted.setdefault(y, []).extend(r.version for r in held if r.key == y)
        elif kind == "sync" and x != y:
            exchange(stores[x], stores[y], wall)
        elif kind == "hear" and sent[x]:  # old deltas are replayed too
            sent[y].extend(stores[y].receive(sent[x][n % len(sent[x])], wall))
        elif kind == "tick":
            sent[x].extend(stores[x].tick(wall))
        elif kind == "wait":
            wall += x
        check()
    for s in stores:
        s.tick(wall)
        check()
        for record in s.records():
            assert (record.version.hlc >> 16) + ttl * 1000 > round(wall * 1000)
    converge(stores, wall)
    check()
    final = stores[0].records()
    assert all(s.records() == final for s in stores)
    for record in final:
        if not record.is_tombstone:
            # Live now means written after every delete of the key: no stale copy won.
            assert all(record.version > v for v in deleted.get(record.key, []))


# --- owner liveness -----------------------------------------------------------------------------


def test_live_items_hide_a_down_owner_after_the_grace() -> None:
    s = Store("a", owner_grace=30.0)
    s.put("svc/a", {"v": 1}, T0)
    s.receive(Store("b").put("svc/b", {"v": 1}, T0), T0)
    s.owner_down("b", T0 + 10)
    s.owner_down("b", T0 + 20)  # the first time counts
    assert [r.key for r in s.live_items("svc/", T0 + 39.9)] == ["svc/a", "svc/b"]
    assert [r.key for r in s.live_items("svc/", T0 + 40)] == ["svc/a"]
    assert [r.key for r in s.items("svc/")] == ["svc/a", "svc/b"]
    s.owner_up("b")
    assert [r.key for r in s.live_items("svc/", T0 + 40)] == ["svc/a", "svc/b"]
    s.owner_up("nobody")


# --- hostile bytes ------------------------------------------------------------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)

near_records = st.lists(
    st.one_of(
        st.sampled_from(KEYS),
        st.binary(max_size=8).map(lambda b: msgpack.packb({"v": b})),
        st.integers(0, (1 << 64) - 1),
        st.sampled_from(["a", "b", ""]),
        msgpack_values,
    ),
    min_size=3,
    max_size=5,
)


def messages() -> st.SearchStrategy[bytes]:
    shaped = st.one_of(
        msgpack_values,
        st.tuples(st.sampled_from([1, 2, 3, 4]), msgpack_values).map(list),
        st.tuples(st.just(1), near_records).map(list),
        st.tuples(st.sampled_from([3, 4]), st.lists(near_records, max_size=3)).map(list),
        st.tuples(st.just(3), st.lists(near_records, max_size=2), msgpack_values).map(list),
        st.tuples(
            st.just(2),
            st.integers(-1, 17),
            st.lists(st.integers(-1, 70_000), max_size=3),
            st.lists(near_records, max_size=3),
        ).map(list),
        st.tuples(st.just(1), st.integers(0, 3), st.binary(max_size=130)).map(list),
    )
    packed = shaped.map(lambda v: msgpack.packb(v))
    return st.one_of(
        st.binary(max_size=64),
        packed.map(lambda p: bytes([STORE_MAGIC]) + p),
        packed.map(lambda p: struct.pack(">BI", STORE_MAGIC, len(p)) + p),
        st.tuples(packed, st.integers(0, 8)).map(
            lambda t: struct.pack(">BI", STORE_MAGIC, max(0, len(t[0]) + t[1] - 4)) + t[0]
        ),
    )


def seeded() -> Store:
    s = Store("a")
    for i, key in enumerate(KEYS):
        s.put(key, {"v": i}, T0)
    s.delete(KEYS[0], T0)
    return s


@settings(max_examples=300)
@given(messages())
def test_hostile_bytes_raise_only_store_error_and_change_nothing(data: bytes) -> None:
    s = seeded()
    for feed in (s.receive, s.handle_sync, s.sync_step):
        before = snapshot(s)
        try:
            out = feed(data, T0 + 1)
        except StoreError:
            assert snapshot(s) == before
            continue
        assert out is None or isinstance(out, bytes | list)
    rejected = s.stats.deltas_rejected + s.stats.sync_frames_rejected
    assert rejected >= 1 or data[:1] == bytes([STORE_MAGIC])


@settings(max_examples=100)
@given(st.binary(min_size=1, max_size=300), st.integers(0, 299))
def test_mangled_real_messages_raise_only_store_error(noise: bytes, at: int) -> None:
    s = seeded()
    peer = Store("p")
    peer.put("svc/web", {"v": "peer"}, T0)
    for real in (
        peer.put("dns/y", {"ip": "10.0.0.9"}, T0),
        peer.sync_request(),
        s.handle_sync(peer.sync_request(), T0),
    ):
        mangled = real[:at] + noise + real[at + len(noise) :]
        for feed in (s.receive, s.handle_sync, s.sync_step):
            before = snapshot(s)
            try:
                feed(mangled, T0 + 1)
            except StoreError:
                assert snapshot(s) == before


def test_delta_with_wrong_types_is_refused() -> None:
    s = Store("a")
    good = msgpack.packb({"v": 1})
    for bad in (
        raw_delta("k", good, -1, "w"),
        raw_delta("k", good, True, "w"),
        raw_delta("k", good, 1 << 16, ""),
        raw_delta("k", good, 1 << 16, 7),
        raw_delta("k", "text", 1 << 16, "w"),
        raw_delta("k", msgpack.packb([1]), 1 << 16, "w"),
        raw_delta("k", msgpack.packb({1: 1}), 1 << 16, "w"),
        raw_delta("k", good + b"\x00", 1 << 16, "w"),
        bytes([STORE_MAGIC]) + msgpack.packb([2, ["k", good, 1 << 16, "w"]]),
        bytes([STORE_MAGIC]) + b"\xff" * 8000,
        b"\x00" + msgpack.packb([1, ["k", good, 1 << 16, "w"]]),
        b"",
    ):
        with pytest.raises(StoreError):
            s.receive(bad, T0)
    assert s.records() == []
    assert s.stats.deltas_rejected == s.stats.deltas_received == 12
