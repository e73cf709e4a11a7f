"""Gossip convergence, failure detection and cost, in deterministic simulation.

Prints JSON lines: one ``setup`` line, then for each cluster size and loss rate the time for a new
member to be known by 99.99 % of the nodes, the time for a crash to be known by all, the bytes
sent per node per second and the wall time; then the false dead declarations over 1,000
node-minutes at 10 % loss; then the reference figures (Serf's convergence model, memberlist's
failure-detection formula). Everything runs under trio's MockClock with a seeded RNG.

    .venv/bin/python benchmarks/gossip.py [--sizes 100,1000,5000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import resource
import sys
import time
from typing import Any

import trio
import trio.testing

from vxnet import __version__
from vxnet.gossip._config import GossipTiming
from vxnet.gossip._lifeguard import suspicion_timeout
from vxnet.gossip._messages import NodeStatus
from vxnet.testing.gossipsim import SimNetwork

QUORUM = 0.9999
SETTLE = 5.0


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def false_dead(net: SimNetwork) -> int:
    """(observer, member) pairs where a running observer holds a running member dead."""
    live = {n.name for n in net.nodes.values() if n.up}
    return sum(
        1
        for name in live
        for m in net.nodes[name].core.members()
        if m.name in live and m.status in (NodeStatus.DEAD, NodeStatus.LEFT)
    )


async def convergence(clock: trio.testing.MockClock, n: int, loss: float, seed: int) -> None:
    wall = time.perf_counter()
    net = SimNetwork(seed, clock=clock)
    names = net.form(n)
    await net.run_for(SETTLE)
    net.set_loss(loss)
    rng = random.Random(seed)
    needed = math.ceil(QUORUM * n)

    # A new member joins through one random seed.
    net.add_node("newcomer")
    net.join("newcomer", [rng.choice(names)])
    observers = [net.nodes[x] for x in names]
    start = trio.current_time()
    bytes_before = net.bytes
    known = await net.run_until(
        start + 120,
        lambda: net.knows("newcomer", NodeStatus.ALIVE, observers) >= needed,
        check_every=0.05,
    )
    join_time = trio.current_time() - start if known else None

    # A member crashes.
    victim = rng.choice(names)
    net.crash(victim)
    live = [node for node in net.nodes.values() if node.up]
    start_fail = trio.current_time()
    detected = await net.run_until(
        start_fail + 300,
        lambda: net.knows(victim, NodeStatus.DEAD, live) == len(live),
        check_every=0.1,
    )
    fail_time = trio.current_time() - start_fail if detected else None
    elapsed = trio.current_time() - start
    emit(
        metric="convergence",
        nodes=n,
        loss=loss,
        join_known_by_9999_s=None if join_time is None else round(join_time, 3),
        failure_known_by_all_s=None if fail_time is None else round(fail_time, 3),
        bytes_per_node_per_s=round((net.bytes - bytes_before) / (n + 1) / elapsed, 1),
        false_dead=false_dead(net),
        wall_s=round(time.perf_counter() - wall, 2),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    )


async def false_positives(
    clock: trio.testing.MockClock, n: int, minutes: float, seed: int, tcp_pings: bool
) -> None:
    wall = time.perf_counter()
    timing = GossipTiming.lan().replace(disable_tcp_pings=not tcp_pings)
    net = SimNetwork(seed, clock=clock, timing=timing)
    net.form(n)
    await net.run_for(SETTLE)
    net.set_loss(0.10)
    await net.run_for(minutes * 60)
    emit(
        metric="false_dead_declarations",
        nodes=n,
        loss=0.10,
        node_minutes=n * minutes,
        tcp_fallback_pings=tcp_pings,
        false_dead=false_dead(net),
        dead_declarations=sum(x.core.stats.deaths_declared for x in net.nodes.values()),
        suspicions=sum(x.core.stats.suspicions for x in net.nodes.values()),
        refutations=sum(x.core.stats.refutations for x in net.nodes.values()),
        wall_s=round(time.perf_counter() - wall, 2),
    )


def references(sizes: list[int]) -> None:
    emit(
        reference="serf convergence model (logistic, to 99.99 %)",
        nodes=100,
        loss=0.0,
        join_known_by_9999_s=2.0,
    )
    emit(
        reference="serf convergence model (logistic, to 99.99 %)",
        nodes=1000,
        loss=0.0,
        join_known_by_9999_s=2.2,
    )
    emit(
        reference="serf convergence model (logistic, to 99.99 %)",
        nodes=1000,
        loss=0.25,
        join_known_by_9999_s=3.0,
    )
    t = GossipTiming.lan()
    for n in sizes:
        low = suspicion_timeout(t.suspicion_mult, n, t.probe_interval)
        emit(
            reference="memberlist failure detection: probe (<= interval) + suspicion timeout "
            "(min with k confirmations, max without)",
            nodes=n,
            suspicion_min_s=round(low, 3),
            suspicion_max_s=round(low * t.suspicion_max_timeout_mult, 3),
            detection_lower_bound_s=round(t.probe_timeout + low, 3),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--losses", default="0,0.25")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fp-nodes", type=int, default=100)
    parser.add_argument("--fp-minutes", type=float, default=10.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    losses = [float(x) for x in args.losses.split(",")]
    emit(
        setup="gossip simulation",
        vxnet=__version__,
        python=sys.version.split()[0],
        machine=platform.machine(),
        timing="memberlist DefaultLANConfig",
        seed=args.seed,
        network="per-packet delay 0.5-5 ms, independent loss; TCP modelled as reliable",
    )
    for n in sizes:
        for loss in losses:
            clock = trio.testing.MockClock(autojump_threshold=0)
            trio.run(convergence, clock, n, loss, args.seed, clock=clock)
    for tcp_pings in (True, False):
        clock = trio.testing.MockClock(autojump_threshold=0)
        trio.run(
            false_positives,
            clock,
            args.fp_nodes,
            args.fp_minutes,
            args.seed,
            tcp_pings,
            clock=clock,
        )
    references(sizes)


if __name__ == "__main__":
    main()
