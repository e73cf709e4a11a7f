"""The membership core in deterministic simulation: joins, crashes, loss, partitions, leaves.

Every test runs whole clusters in one trio task under ``MockClock(autojump_threshold=0)``, with
one seeded RNG for the network and each node; a failure reproduces exactly from its seed.
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vxnet.gossip._config import GossipTiming
from vxnet.gossip._messages import NodeStatus
from vxnet.testing.gossipsim import SimNetwork


def run(test: object, *args: object) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(test, clock, *args, clock=clock)  # type: ignore[arg-type]


async def start_cluster(net: SimNetwork, n: int) -> list[str]:
    names = [f"n{i}" for i in range(n)]
    for name in names:
        net.add_node(name)
    for name in names[1:]:
        net.join(name, [names[0]])
    return names


def test_a_cluster_forms_from_one_seed() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(1, clock=clock)
        await start_cluster(net, 20)
        start = trio.current_time()
        assert await net.run_until(start + 30, net.converged)
        assert trio.current_time() - start < 10

    run(body)


def test_join_retries_with_backoff_until_a_seed_answers() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(7, clock=clock)
        net.add_node("seed")
        net.add_node("late")
        net.partition(["seed"], ["late"])
        net.join("late", ["seed"])
        await net.run_for(60)
        late = net.nodes["late"].core
        assert not late.joined
        assert late.stats.push_pulls == 0
        net.heal()
        start = trio.current_time()
        assert await net.run_until(start + 120, net.converged)
        assert late.joined
        # The backoff doubles from 1 s up to 60 s, plus the 10 s TCP timeout of each attempt.
        assert trio.current_time() - start < 75

    run(body)


def test_a_crashed_node_is_declared_dead_everywhere() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(2, clock=clock)
        names = await start_cluster(net, 12)
        assert await net.run_until(trio.current_time() + 30, net.converged)
        net.crash("n5")
        start = trio.current_time()
        others = [n for n in net.live()]
        assert await net.run_until(
            start + 120, lambda: net.knows("n5", NodeStatus.DEAD, others) == len(others)
        )
        # Suspicion lasts between min (4 s at this size) and max (24 s) after detection.
        assert 4 <= trio.current_time() - start <= 40
        assert all(net.view(n)["n5"] is NodeStatus.DEAD for n in names if n != "n5")

    run(body)


def test_a_graceful_leave_is_seen_as_left() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(3, clock=clock)
        await start_cluster(net, 8)
        assert await net.run_until(trio.current_time() + 30, net.converged)
        net.leave("n3")
        others = [n for n in net.live() if n.name != "n3"]
        assert await net.run_until(
            trio.current_time() + 10, lambda: net.knows("n3", NodeStatus.LEFT, others) == 7
        )

    run(body)


def test_no_false_dead_declarations_under_loss() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(4, clock=clock)
        await start_cluster(net, 20)
        assert await net.run_until(trio.current_time() + 30, net.converged)
        net.set_loss(0.10)
        await net.run_for(300)  # 100 node-minutes at 10 % loss
        deaths = sum(n.core.stats.deaths_declared for n in net.nodes.values())
        assert deaths == 0
        assert net.converged()
        net.heal()
        assert await net.run_until(trio.current_time() + 30, net.converged)

    run(body)


def test_a_suspected_live_node_refutes_and_stays_alive() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(6, clock=clock)
        await start_cluster(net, 10)
        assert await net.run_until(trio.current_time() + 30, net.converged)
        # n0 never hears n4 (a one-way partition, TCP included) and every packet has a 30 %
        # chance of loss: n0's probes of n4 fail whenever the indirect probes fail too, so n0
        # suspects n4 again and again. n4 hears of it through gossip and refutes every time.
        net.block("n4", "n0")
        net.set_loss(0.3)
        await net.run_for(300)
        assert net.nodes["n0"].core.stats.suspicions > 0
        assert net.nodes["n4"].core.stats.refutations > 0
        assert sum(n.core.stats.deaths_declared for n in net.nodes.values()) == 0
        net.heal()
        assert await net.run_until(trio.current_time() + 30, net.converged)
        assert net.nodes["n0"].core.member("n4").incarnation > 1  # type: ignore[union-attr]

    run(body)


def test_a_healed_partition_merges_even_after_members_were_reaped() -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(5, timing=GossipTiming.lan(), clock=clock)
        names = await start_cluster(net, 10)
        assert await net.run_until(trio.current_time() + 30, net.converged)
        net.partition(names[:5], names[5:])
        await net.run_for(120)  # long enough to declare the other side dead and reap it
        assert net.view("n0").get("n9", NodeStatus.DEAD) is not NodeStatus.ALIVE
        net.heal()
        assert await net.run_until(trio.current_time() + 180, net.converged)

    run(body)


# A fault: (kind, a number for rates and delays, two node indexes).
FAULT = st.tuples(
    st.sampled_from(["loss", "dup", "delay", "partition", "oneway", "crash"]),
    st.floats(0.0, 0.4),
    st.integers(0, 5),
    st.integers(0, 5),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    faults=st.lists(st.tuples(st.floats(0, 60), FAULT), max_size=6),
)
def test_after_any_faults_heal_the_live_nodes_agree(
    seed: int, faults: list[tuple[float, tuple[str, float, int, int]]]
) -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        net = SimNetwork(seed, clock=clock)
        names = await start_cluster(net, 6)
        assert await net.run_until(trio.current_time() + 30, net.converged)
        crashed: set[str] = set()
        start = trio.current_time()
        for at, (kind, x, i, j) in sorted(faults, key=lambda f: f[0]):
            await net.run_until(start + at)
            if kind == "loss":
                net.set_loss(x)
            elif kind == "dup":
                net.set_duplicate(x)
            elif kind == "delay":
                net.set_delay(0.0005, 0.0005 + x)
            elif kind == "partition" and i > 0:
                net.partition(names[:i], names[i:])
            elif kind == "oneway" and i != j:
                net.block(names[i], names[j])
            elif kind == "crash" and i > 0 and len(crashed) < 2:
                crashed.add(names[i])
                net.crash(names[i])
        await net.run_until(start + 60)
        net.heal()
        net.set_delay(0.0005, 0.005)

        def agreed() -> bool:
            live = net.live()
            return net.converged() and all(
                net.knows(name, NodeStatus.DEAD, live) == len(live) for name in crashed
            )

        # Bound: reconnect interval (30 s) + suspicion max at this size (24 s) + spread.
        assert await net.run_until(trio.current_time() + 150, agreed), {
            n.name: net.view(n.name) for n in net.live()
        }

    run(body)
