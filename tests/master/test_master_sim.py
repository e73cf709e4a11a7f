"""Master failovers during registrations, in deterministic simulation.

Three log replicas (simulated network and disks, MockClock, one seeded RNG) carry registrations
from several clients, who register agents from a small pool again and again; the coordinator is
crashed repeatedly, sometimes with its disk wiped, with message loss throughout. Each replica
applies its log to its own allocator, as the masters do. Afterwards: the log checks hold, every
replica's allocator has the same state, every acknowledged registration's allocation is the one
the agent holds at the end, and no VTEP address, MAC or subnet is held twice.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Network, IPv6Network

import pytest
import trio
import trio.testing

from vxnet.config import NetworkConfig, Overlay
from vxnet.master._allocator import Allocator
from vxnet.testing.logsim import LogSim

NETWORK = NetworkConfig(
    overlays=(
        Overlay(name="dcos", subnet=IPv4Network("9.0.0.0/16"), prefix=24),
        Overlay(name="dcos6", subnet6=IPv6Network("fd01:b::/64")),
    )
)
POOL = [f"198.18.0.{i}" for i in range(1, 41)]


def command(client: int, seq: int) -> bytes:
    ip = POOL[(client * 13 + seq * 7) % len(POOL)]
    return Allocator.register_command(ip, None)


def replay(values: list[bytes]) -> Allocator:
    allocator = Allocator(NETWORK)
    for value in values:
        if value:
            allocator.apply(value)
    return allocator


def unique_holdings(allocator: Allocator) -> None:
    seen: dict[str, set[str]] = {}
    for agent in allocator.state()["agents"]:
        vxlan = agent["overlays"][0]["backend"]["vxlan"]
        held = [("vtep_ip", vxlan["vtep_ip"]), ("vtep_mac", vxlan["vtep_mac"])]
        held.append(("vtep_ip6", vxlan["vtep_ip6"]))
        held += [(k, o[k]) for o in agent["overlays"] for k in ("subnet", "subnet6") if k in o]
        for kind, value in held:
            assert value not in seen.setdefault(kind, set()), f"{kind} {value} held twice"
            seen[kind].add(value)


@pytest.mark.parametrize("seed", range(8))
def test_registrations_through_coordinator_crashes(seed: int) -> None:
    async def body(clock: trio.testing.MockClock) -> None:
        rng = random.Random(seed)
        sim = LogSim(seed, 3, clock=clock, make_value=command)
        sim.start_all()
        network = Allocator.network_command(NETWORK)
        await sim.run_until(trio.current_time() + 5, lambda: sim.leader() is not None)
        leader = sim.leader()
        assert leader is not None
        core = sim.replicas[leader].core
        assert core is not None
        core.append(0, network, trio.current_time())  # the first entry, as a master writes it
        sim.add_clients(4)
        sim.faults.loss = 0.03
        for _ in range(5):
            await sim.run_until(trio.current_time() + rng.uniform(0.5, 2.0), client_every=0.01)
            old = sim.leader()
            if old is None:
                continue
            sim.crash(old)
            if rng.random() < 0.3:
                sim.wipe(old)
            await sim.run_until(trio.current_time() + rng.uniform(0.5, 3.0), client_every=0.01)
            sim.start(old)
        sim.heal()
        await sim.run_until(trio.current_time() + 3, client_every=0.01)
        assert await sim.run_until(trio.current_time() + 30, sim.all_caught_up)
        assert sim.check() == []

        logs = [[v for _, v in r.applied] for r in sim.replicas]
        assert all(len(x) == len(logs[0]) for x in logs)
        final = [replay(x) for x in logs]
        assert final[0].state() == final[1].state() == final[2].state()
        unique_holdings(final[0])
        acked = [op for op in sim.history if op.ret is not None]
        assert len(acked) > 100

        # The answer each client got (the outcome of applying its entry) is what the agent
        # holds at the end: no failover changed or lost an acknowledged allocation.
        answers: dict[int, dict[str, object] | None] = {}
        allocator = Allocator(NETWORK)
        for position in range(len(sim.chosen)):
            value = sim.chosen[position]
            if value:
                agent = allocator.apply(value).agent
                answers[position] = None if agent is None else agent.to_json()
        for op in acked:
            answer = answers[op.output]  # type: ignore[index]
            assert answer is not None
            held = final[0].agent_info(str(answer["ip"]))
            assert held is not None
            assert answer == held.to_json(), f"{answer['ip']} changed"

    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(body, clock, clock=clock)
