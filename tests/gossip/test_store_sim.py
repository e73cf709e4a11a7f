"""The replicated store on gossip, in deterministic simulation (MockClock, seeded RNG).

Writes spread as deltas piggybacked on gossip; anti-entropy repairs what they missed. Clusters
here have loss, duplication, reordering (random delays), partitions, crash-restarts and skewed
clocks; once the faults heal, every live node must hold the same store.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vxnet.gossip._store import Store
from vxnet.testing.gossipsim import SimNetwork


def run(body: Any) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(body, clock, clock=clock)


def live_view(net: SimNetwork, name: str) -> dict[str, Any]:
    store = net.nodes[name].store
    assert store is not None
    return {r.key: dict(r.value or {}) for r in store.store.items()}


def test_records_written_everywhere_reach_everyone() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(1, clock=clock, store=Store)
        names = net.form(30)
        await net.run_for(2)
        for name in names:
            net.put(name, f"overlay/{name}", {"vtep": name, "subnet": "9.0.1.0/24"})
        start = trio.current_time()
        assert await net.run_until(
            start + 10, lambda: all(len(live_view(net, n)) == 30 for n in names)
        )
        assert trio.current_time() - start < 5
        assert net.stores_agree()

    run(body)


def test_anti_entropy_repairs_what_a_partition_missed() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(2, clock=clock, store=Store)
        names = net.form(10)
        await net.run_for(2)
        net.partition(names[:3], names[3:])
        for name in names:
            net.put(name, f"tasks/{name}/web", {"ip": name})
        await net.run_for(20)
        assert len(live_view(net, "n0")) == 3  # only its side
        net.heal()
        assert await net.run_until(
            trio.current_time() + 120,
            lambda: net.stores_agree() and all(len(live_view(net, n)) == 10 for n in names),
        )

    run(body)


def test_the_live_view_hides_a_dead_owner_and_restores_it_on_return() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(3, clock=clock, store=Store)
        net.form(6)
        await net.run_for(2)
        net.put("n5", "tasks/n5/db", {"ip": "9.0.5.2"})
        await net.run_for(5)

        def wall() -> float:
            return net._wall(net.nodes["n0"])

        store0 = net.nodes["n0"].store
        assert store0 is not None
        assert [r.key for r in store0.store.live_items("tasks/", wall())] == ["tasks/n5/db"]
        net.crash("n5")
        # Detection (suspicion) plus the owner grace period.
        await net.run_for(60)
        assert store0.store.live_items("tasks/", wall()) == []
        assert [r.key for r in store0.store.items("tasks/")] == ["tasks/n5/db"]  # kept, hidden
        net.restart("n5", ["n0"])
        net.put("n5", "tasks/n5/db", {"ip": "9.0.5.2"})  # the owner re-publishes what it runs
        assert await net.run_until(
            trio.current_time() + 60,
            lambda: [r.key for r in store0.store.live_items("tasks/", wall())] == ["tasks/n5/db"],
        )

    run(body)


def test_a_deleted_key_does_not_come_back_from_a_stale_copy_after_gc() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        ttl = 120.0
        net = SimNetwork(4, clock=clock, store=lambda n: Store(n, tombstone_ttl=ttl))
        names = net.form(6)
        await net.run_for(2)
        net.put("n0", "tasks/n0/old", {"ip": "9.0.0.9"})
        await net.run_for(10)
        assert all("tasks/n0/old" in live_view(net, n) for n in names)
        net.partition(["n5"], names[:5])
        net.delete("n0", "tasks/n0/old")
        await net.run_for(3 * ttl)  # tombstones are collected on n0's side meanwhile
        net.heal()
        await net.run_for(120)
        assert all("tasks/n0/old" not in live_view(net, n) for n in names)
        assert net.stores_agree()

    run(body)


OP = st.tuples(
    st.floats(0, 40),
    st.sampled_from(
        ["put", "put", "delete", "loss", "dup", "delay", "partition", "crash", "restart"]
    ),
    st.integers(0, 4),
    st.integers(0, 3),
    st.floats(0, 0.4),
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    ops=st.lists(OP, max_size=25),
    skews=st.lists(st.floats(-2.0, 2.0), min_size=5, max_size=5),
)
def test_after_faults_heal_every_live_node_holds_the_same_store(
    seed: int, ops: list[tuple[float, str, int, int, float]], skews: list[float]
) -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(seed, clock=clock, store=Store)
        names = [f"n{i}" for i in range(5)]
        for name, skew in zip(names, skews, strict=True):
            net.add_node(name, skew=skew)
        for name in names[1:]:
            net.join(name, ["n0"])
        await net.run_for(5)
        model: dict[str, dict[str, Any]] = {}  # what each owner last meant
        down: set[str] = set()
        start = trio.current_time()
        for at, kind, i, k, x in sorted(ops, key=lambda op: op[0]):
            await net.run_until(start + at)
            name = names[i]
            key = f"tasks/{name}/k{k}"
            if kind == "put" and name not in down:
                value = {"v": round(x, 3), "at": round(trio.current_time(), 3)}
                net.put(name, key, value)
                model[key] = value
            elif kind == "delete" and name not in down:
                net.delete(name, key)
                model.pop(key, None)
            elif kind == "loss":
                net.set_loss(x)
            elif kind == "dup":
                net.set_duplicate(x)
            elif kind == "delay":
                net.set_delay(0.0005, 0.0005 + x)
            elif kind == "partition" and i > 0:
                net.partition(names[:i], names[i:])
            elif kind == "crash" and i > 0 and name not in down:
                net.crash(name)
                down.add(name)
            elif kind == "restart" and name in down:
                net.restart(name, [n for n in names if n not in down][:1] or ["n0"])
                down.discard(name)
                for key2, value2 in model.items():  # the owner re-publishes its records
                    if key2.startswith(f"tasks/{name}/"):
                        net.put(name, key2, value2)
        net.heal()
        net.set_delay(0.0005, 0.005)

        # A node that crashed for good may have taken writes with it that never left it: the
        # model speaks only for owners that run at the end.
        running = {n.name for n in net.live()}
        expected = {k: v for k, v in model.items() if k.split("/")[1] in running}

        def agreed() -> bool:
            return net.stores_agree() and all(
                {k: v for k, v in live_view(net, n.name).items() if k.split("/")[1] in running}
                == expected
                for n in net.live()
            )

        assert await net.run_until(trio.current_time() + 180, agreed), (
            expected,
            {n.name: live_view(net, n.name) for n in net.live()},
        )

    run(body)
