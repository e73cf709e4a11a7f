"""Programming the overlay into the kernel: 1,000 remote agents, steady state, one more agent.

In a fresh lab namespace (one host of a :class:`vxnet.sandbox.lab.Lab`) with a VTEP ``vtep1024``
holding 44.128.0.1/16, an agent learns of ``--agents`` remote agents at once (IPv4 only: per agent
one FDB entry MAC -> underlay 198.19.x.y, one permanent neighbour 44.128.x.y -> MAC and one onlink
route 9.x.y.0/24 via 44.128.x.y; the underlay addresses are FDB destinations only, no packet is
sent).
A reconcile is: desired state, read the kernel, diff, apply; all through one pyroute2 socket.

Figures (JSON lines, after a ``setup`` line):

* ``program_all``: wall time of the reconcile that programs every agent from an empty device
  (read + diff + apply, split out), and the netlink writes it made;
* ``steady``: the same reconcile with nothing changed: writes (must be 0) and wall time;
* ``one_new_agent``: from the event (the reconcile function called with one more agent) to the
  agent programmed, over ``--events`` events: the agent's event path diffs against the state it
  last read and applied (kept with ``apply_ops``; a failed op drops it, so the next reconcile
  reads again), and for comparison the same event with a full read of the kernel.

Targets beside the figures: all agents under 2 s; 0 writes when unchanged; one new agent under
50 ms. Needs root (it builds network namespaces); removes everything it built.

    .venv/bin/python benchmarks/overlay_program.py [--agents 1000] [--events 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import pyroute2

from vxnet import __version__
from vxnet.overlay._diff import apply_ops, diff
from vxnet.overlay._model import KernelState, RemoteAgent, desired_state
from vxnet.overlay._netlink import Kernel
from vxnet.sandbox.lab import Lab

DEV = "vtep1024"
VNI = 1024
PORT = 64000
MTU = 1420
TARGET_ALL_S = 2.0
TARGET_ONE_S = 0.050


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def remote(n: int) -> RemoteAgent:
    hi, lo = n >> 8, n & 255
    return RemoteAgent(
        ip=f"198.19.{hi}.{lo}",
        vtep_ip=f"44.128.{hi}.{lo}",
        vtep_mac=f"70:b3:d5:80:{hi:02x}:{lo:02x}",
        subnets=(f"9.{hi}.{lo}.0/24",),
    )


class Reconciler:
    """The agent's reconcile loop, reduced to its kernel part, with timings of each step."""

    def __init__(self, kernel: Kernel, dev: str) -> None:
        self.kernel = kernel
        self.dev = dev
        self.known: KernelState | None = None  # what the kernel held after the last reconcile
        self.timings: dict[str, float] = {}

    def reconcile(self, remotes: list[RemoteAgent], *, read: bool = True) -> dict[str, Any]:
        t0 = time.perf_counter()
        desired = desired_state(remotes, self.dev)
        t1 = time.perf_counter()
        actual = self.kernel.read(self.dev) if read or self.known is None else self.known
        t2 = time.perf_counter()
        ops = diff(desired, actual)
        t3 = time.perf_counter()
        result = self.kernel.apply(ops)
        t4 = time.perf_counter()
        self.known = None if result.errors else apply_ops(actual, ops)
        return {
            "seconds": round(t4 - t0, 4),
            "desired_s": round(t1 - t0, 4),
            "read_s": round(t2 - t1, 4),
            "diff_s": round(t3 - t2, 4),
            "apply_s": round(t4 - t3, 4),
            "ops": len(ops),
            "writes": result.writes,
            "errors": len(result.errors),
            "first_error": result.errors[0] if result.errors else None,
        }


def check(kernel: Kernel, remotes: list[RemoteAgent]) -> bool:
    return kernel.read(DEV) == desired_state(remotes, DEV)


def bench(agents: int, events: int) -> None:
    emit(
        metric="setup",
        vxnet=__version__,
        python=platform.python_version(),
        pyroute2=pyroute2.__version__,
        kernel=platform.release(),
        machine=platform.machine(),
        cpus=os.cpu_count(),
        agents=agents,
        objects=3 * agents,
        events=events,
        socket="one pyroute2 NetNS socket (sync API), one request per op",
    )
    with Lab(1) as lab, lab.hosts[0].iproute() as ipr:
        host = lab.hosts[0]
        kernel = Kernel(ipr)
        kernel.ensure_vtep(
            DEV, VNI, PORT, str(host.address), "70:b3:d5:80:00:01", "44.128.0.1/16", None, MTU
        )
        rec = Reconciler(kernel, DEV)
        remotes = [remote(n) for n in range(2, agents + 2)]

        first = rec.reconcile(remotes)
        emit(metric="program_all", agents=agents, programmed=check(kernel, remotes), **first)

        before = kernel.writes
        steady = rec.reconcile(remotes)
        steady_writes = kernel.writes - before
        emit(metric="steady", netlink_writes=steady_writes, **steady)

        cached: list[float] = []
        full: list[float] = []
        n = agents + 2
        for i in range(2 * events):
            remotes.append(remote(n + i))
            r = rec.reconcile(remotes, read=i % 2 == 1)
            if r["ops"] != 3 or r["writes"] != 3 or r["errors"]:
                raise SystemExit(f"one new agent: unexpected reconcile {r}")
            (full if i % 2 else cached).append(r["seconds"])
        programmed = check(kernel, remotes)
        emit(
            metric="one_new_agent",
            events=events,
            programmed=programmed,
            known_state_p50_ms=round(statistics.median(cached) * 1000, 2),
            known_state_max_ms=round(max(cached) * 1000, 2),
            full_read_p50_ms=round(statistics.median(full) * 1000, 2),
            full_read_max_ms=round(max(full) * 1000, 2),
        )
        emit(
            metric="targets",
            all_agents_s=first["seconds"],
            all_agents_target_s=TARGET_ALL_S,
            all_agents_target_met=first["seconds"] < TARGET_ALL_S and not first["errors"],
            unchanged_writes=steady_writes,
            unchanged_target_met=steady_writes == 0,
            one_new_agent_max_ms=round(max(cached) * 1000, 2),
            one_new_agent_path="diff against the state last read and applied",
            one_new_agent_target_ms=TARGET_ONE_S * 1000,
            one_new_agent_target_met=max(cached) < TARGET_ONE_S and programmed,
            one_new_agent_full_read_max_ms=round(max(full) * 1000, 2),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000, help="remote agents (default 1000)")
    parser.add_argument("--events", type=int, default=20, help="new-agent events (default 20)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: the benchmark builds network namespaces")
    if not 1 <= args.agents + 2 * args.events <= 65000:
        sys.exit("--agents plus twice --events must stay within 44.128.0.0/16")
    bench(args.agents, args.events)


with contextlib.suppress(KeyboardInterrupt):
    if __name__ == "__main__":
        main()
