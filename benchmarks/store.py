"""Replicated-store dissemination and anti-entropy, in deterministic simulation.

Prints JSON lines: a ``setup`` line; the time for N records written at the same moment (one per
node, 200 bytes each) to be held by every node; the time for one update to reach 99.99 % of the
nodes, beside the time membership news takes in the same cluster; after a partition of 10 % of
the nodes heals, the bytes anti-entropy exchanged against the size of the changed records and of
the whole store; and the wall time of each part. MockClock, seeded RNG, memberlist LAN timings.

    .venv/bin/python benchmarks/store.py [--nodes 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from typing import Any

import trio
import trio.testing

from vxnet import __version__
from vxnet.gossip._messages import NodeStatus
from vxnet.gossip._store import Store
from vxnet.testing.gossipsim import SimNetwork

SETTLE = 5.0
PAYLOAD = "x" * 170  # with the other fields, about 200 bytes of value per record


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def record(name: str, generation: int) -> dict[str, Any]:
    return {"agent": name, "gen": generation, "pad": PAYLOAD}


async def bench(clock: trio.testing.MockClock, n: int, seed: int) -> None:
    wall = time.perf_counter()
    net = SimNetwork(seed, clock=clock, store=Store)
    names = net.form(n)
    await net.run_for(SETTLE)

    # 1. Every node writes one record at the same moment.
    for name in names:
        net.put(name, f"overlay/{name}", record(name, 0))
    start = trio.current_time()
    stores = [net.nodes[x].store for x in names]
    done = await net.run_until(
        start + 120,
        lambda: all(s is not None and len(s.store) >= n for s in stores),
        check_every=0.1,
    )
    emit(
        metric="all_records_everywhere",
        nodes=n,
        record_bytes=200,
        seconds=round(trio.current_time() - start, 2) if done else None,
        target_seconds=5.0,
        wall_s=round(time.perf_counter() - wall, 2),
    )
    await net.run_for(30)

    # 2. One update, against one membership news item in the same cluster.
    wall = time.perf_counter()
    needed = math.ceil(0.9999 * n)
    net.put(names[0], f"overlay/{names[0]}", record(names[0], 1))
    start = trio.current_time()

    def updated() -> int:
        count = 0
        for s in stores:
            assert s is not None
            r = s.store.get(f"overlay/{names[0]}")
            count += r is not None and r.value is not None and r.value["gen"] == 1
        return count

    await net.run_until(start + 60, lambda: updated() >= needed, check_every=0.05)
    update_time = trio.current_time() - start
    net.add_node("newcomer")
    net.join("newcomer", [names[-1]])
    start = trio.current_time()
    observers = [net.nodes[x] for x in names]
    await net.run_until(
        start + 60,
        lambda: net.knows("newcomer", NodeStatus.ALIVE, observers) >= needed,
        check_every=0.05,
    )
    emit(
        metric="one_update_to_9999",
        nodes=n,
        seconds=round(update_time, 3),
        membership_news_seconds=round(trio.current_time() - start, 3),
        wall_s=round(time.perf_counter() - wall, 2),
    )

    # 3. A partition of 10 % of the nodes, writes on both sides, then the heal.
    wall = time.perf_counter()
    await net.run_for(30)
    small = names[: n // 10]
    net.partition(small, [*names[n // 10 :], "newcomer"])
    await net.run_for(30)
    changed = small + names[n // 10 : n // 5]  # the small side and as many on the big side
    for name in changed:
        net.put(name, f"overlay/{name}", record(name, 2))
    await net.run_for(30)
    sync_before, bytes_before = net.sync_bytes, net.bytes
    net.heal()
    start = trio.current_time()

    def healed() -> bool:
        for s in stores:
            assert s is not None
            for name in changed:
                r = s.store.get(f"overlay/{name}")
                if r is None or r.value is None or r.value["gen"] != 2:
                    return False
        return True

    done = await net.run_until(start + 300, healed, check_every=0.5)
    a_store = stores[0]
    assert a_store is not None
    store_bytes = sum(
        len(json.dumps(dict(r.value or {}))) + len(r.key) for r in a_store.store.items()
    )
    changed_bytes = len(changed) * (200 + 30)
    emit(
        metric="partition_heal",
        nodes=n,
        partitioned=len(small),
        changed_records=len(changed),
        seconds=round(trio.current_time() - start, 2) if done else None,
        anti_entropy_bytes=net.sync_bytes - sync_before,
        all_bytes=net.bytes - bytes_before,
        changed_records_bytes=changed_bytes,
        store_bytes=store_bytes,
        anti_entropy_per_node_vs_changed=round(
            (net.sync_bytes - sync_before) / n / changed_bytes, 3
        ),
        wall_s=round(time.perf_counter() - wall, 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    emit(
        setup="store simulation",
        vxnet=__version__,
        python=sys.version.split()[0],
        machine=platform.machine(),
        nodes=args.nodes,
        seed=args.seed,
        timing="memberlist DefaultLANConfig",
        network="delay 0.5-5 ms, no loss",
    )
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(bench, clock, args.nodes, args.seed, clock=clock)


if __name__ == "__main__":
    main()
