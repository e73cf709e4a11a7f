"""The store layer with the time as a parameter: retraction of an earlier life, burst decay."""

from __future__ import annotations

from vxnet.gossip._layers import StoreLayer
from vxnet.gossip._store import Store

T0 = 1_700_000_000.0


def test_records_of_an_earlier_life_are_retracted_once_the_grace_is_over() -> None:
    before = Store("a")
    delta = before.put("tasks/a/old", {"ip": "9.0.0.1"}, T0)
    store = Store("a")  # the same node, restarted with an empty store
    layer = StoreLayer(store, 4, started=T0 + 100, republish_grace=30)
    layer.receive(delta, T0 + 101)  # a peer still holds the old record
    layer.put("tasks/a/new", {"ip": "9.0.0.2"}, T0 + 102)  # re-published by the new process
    assert layer.next_deadline() <= T0 + 130
    layer.tick(T0 + 129)
    assert tombstones(store) == {"tasks/a/old": False, "tasks/a/new": False}
    layer.tick(T0 + 130)
    assert tombstones(store) == {"tasks/a/old": True, "tasks/a/new": False}


def tombstones(store: Store) -> dict[str, bool]:
    return {r.key: r.is_tombstone for r in store.records()}


def test_a_burst_of_merged_records_decays_with_the_wall_time_given() -> None:
    source = Store("b")
    deltas = [source.put(f"tasks/b/t{i}", {"ip": f"9.0.1.{i}"}, T0) for i in range(10)]
    layer = StoreLayer(Store("a"), 4, started=T0)
    for delta in deltas:
        layer.receive(delta, T0 + 1)
    assert layer.backlogged(T0 + 1)
    assert not layer.backlogged(T0 + 11)  # ten records, halved every second for ten seconds
