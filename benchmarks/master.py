"""Master registrations: throughput, latency and failover with three masters (fsync on).

Three ``vxnet master`` processes on 127.0.0.1-3 (SQLite log with synchronous=FULL). Each client
registers new agents one after another for ``--seconds`` (every registration allocates a VTEP and
a subnet per network, so every one is written to the log), over one keep-alive HTTP/1.1
connection to the leader. Figures: registrations per second, p50 and p99 latency, at 1 and 64
concurrent clients. Failover: with 8 clients registering, SIGKILL the leader and time from the
kill to the first registration sent after it that succeeds (clients give up on a request after
0.25 s and try the next master). State reads, on a fresh cluster: ``GET /overlay-master/state``
one after another on a connection of its own, idle and during a burst of 64 registering clients
(p50/p99; the state grows from the warm-up's agents to the burst's). Targets: at least 1,000
registrations per second at 64 clients; failover under 3 s.

Everything runs twice in the same run, with TLS (the log port and the API: TLS 1.3, certificates
from a cluster CA, the clients holding an operator's) and plain (``--tls on|off`` runs one);
the last line gives the ratios TLS / plain, with the target of at least 0.8 for throughput.

    .venv/bin/python benchmarks/master.py [--seconds 5] [--clients 1 64] [--burst-clients 64]
        [--tls both|on|off]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from _rawhttp import RawHttp  # benchmarks/ is the script's directory
from vxnet import __version__
from vxnet.testing.procs import MasterProcesses

NETWORK = """
[network]
vtep_subnet = "44.128.0.0/14"

[[network.overlays]]
name = "dcos"
subnet = "9.0.0.0/8"
prefix = 24
"""
FAILOVER_CLIENTS = 8
FAILOVER_PATIENCE = 0.25


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def agent_ip(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


class Registrar:
    """One client: a connection to a master, moving to the next one when it fails."""

    def __init__(self, masters: MasterProcesses, start: int, patience: float) -> None:
        self.masters = masters
        self.target = start
        self.patience = patience
        self.conn: RawHttp | None = None

    async def register(self, ip: str) -> bool:
        """Whether the registration succeeded (False: retry with another request)."""
        body = json.dumps({"ip": ip}).encode()
        try:
            with trio.fail_after(self.patience):
                if self.conn is None:
                    host = f"127.0.0.{self.target + 1}"
                    self.conn = await connect(self.masters, host)
                status, answer = await self.conn.post("/overlay-master/register", body)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, EOFError):
            await self.close()
            self.target = (self.target + 1) % self.masters.n
            return False
        if status in (200, 201):
            return True
        if status == 307:
            leader = json.loads(answer).get("leader") or ""
            host = leader.partition("://")[2].rpartition(":")[0]
            await self.close()
            if host.startswith("127.0.0."):
                self.target = int(host.rpartition(".")[2]) - 1
        elif status == 503:
            await trio.sleep(0.02)
        else:
            raise RuntimeError(f"register {ip}: HTTP {status}: {answer[:200]!r}")
        return False

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.aclose()
            self.conn = None


async def connect(m: MasterProcesses, host: str) -> RawHttp:
    """A connection to a master's API (HTTPS with the operator's certificate when TLS is on)."""
    tls = None if m.client_tls is None else m.client_tls.client
    return await RawHttp.connect(host, m.api_port, tls)


async def load(
    m: MasterProcesses, leader: int, clients: int, seconds: float, ips: Any
) -> dict[str, Any]:
    latencies: list[float] = []
    retries = 0
    stop_at = trio.current_time() + seconds

    async def worker() -> None:
        nonlocal retries
        r = Registrar(m, leader, 5.0)
        try:
            while trio.current_time() < stop_at:
                ip = agent_ip(next(ips))
                t0 = time.perf_counter()
                while not await r.register(ip):
                    retries += 1
                latencies.append(time.perf_counter() - t0)
        finally:
            await r.close()

    wall = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(worker)
    wall = time.perf_counter() - wall
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 3)

    return {
        "clients": clients,
        "registrations": len(latencies),
        "per_s": round(len(latencies) / wall, 1),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "retries": retries,
        "seconds": round(wall, 2),
    }


def percentile_ms(sorted_seconds: list[float], q: float) -> float:
    """The ``q`` quantile of sorted durations in seconds, in milliseconds (nearest rank)."""
    i = min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))
    return round(sorted_seconds[i] * 1000, 3)


async def read_state(m: MasterProcesses, leader: int, stop: trio.Event) -> list[float]:
    """``GET /overlay-master/state`` from the leader one after another until ``stop``."""
    latencies: list[float] = []
    conn = await connect(m, f"127.0.0.{leader + 1}")
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            with trio.fail_after(10):
                status, answer = await conn.request("GET", "/overlay-master/state")
            if status != 200:
                raise RuntimeError(f"GET state: HTTP {status}: {answer[:200]!r}")
            latencies.append(time.perf_counter() - t0)
    finally:
        await conn.aclose()
    return sorted(latencies)


async def agent_count(m: MasterProcesses, leader: int) -> int:
    conn = await connect(m, f"127.0.0.{leader + 1}")
    try:
        _, answer = await conn.request("GET", "/overlay-master/state")
    finally:
        await conn.aclose()
    return len(json.loads(answer)["agents"])


async def state_reads(
    m: MasterProcesses, leader: int, clients: int, seconds: float, ips: Any
) -> dict[str, Any]:
    """State read latency alone, then while ``clients`` register for ``seconds``."""
    agents_before = await agent_count(m, leader)
    stop = trio.Event()
    idle: list[float] = []
    burst: list[float] = []
    registered: dict[str, Any] = {}

    async def reader(into: list[float]) -> None:
        into.extend(await read_state(m, leader, stop))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, idle)
        await trio.sleep(min(seconds, 2.0))
        stop.set()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, burst)
        registered.update(await load(m, leader, clients, seconds, ips))
        stop.set()
    return {
        "burst_clients": clients,
        "agents_before": agents_before,
        "agents_after": await agent_count(m, leader),
        "idle_reads": len(idle),
        "idle_p50_ms": percentile_ms(idle, 0.5),
        "idle_p99_ms": percentile_ms(idle, 0.99),
        "burst_reads": len(burst),
        "burst_p50_ms": percentile_ms(burst, 0.5),
        "burst_p99_ms": percentile_ms(burst, 0.99),
        "burst_max_ms": round(burst[-1] * 1000, 3),
        "burst_registrations_per_s": registered["per_s"],
    }


async def failover(m: MasterProcesses, ips: Any) -> dict[str, Any]:
    leader = await m.leader()
    killed_at: list[float] = []
    first_ok: list[float] = []
    done = trio.Event()

    async def worker(k: int) -> None:
        r = Registrar(m, leader, FAILOVER_PATIENCE)
        try:
            while not done.is_set():
                sent = time.perf_counter()
                ok = await r.register(agent_ip(next(ips)))
                if ok and killed_at and sent > killed_at[0] and not first_ok:
                    first_ok.append(time.perf_counter())
                    done.set()
        finally:
            await r.close()

    with trio.move_on_after(30):
        async with trio.open_nursery() as nursery:
            for k in range(FAILOVER_CLIENTS):
                nursery.start_soon(worker, k)
            await trio.sleep(1.0)
            killed_at.append(time.perf_counter())
            m.kill(leader)
            await done.wait()
            nursery.cancel_scope.cancel()
    seconds = first_ok[0] - killed_at[0] if first_ok else None
    return {"killed": leader, "seconds": None if seconds is None else round(seconds, 3)}


async def bench(args: argparse.Namespace) -> None:
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.tls]
    with tempfile.TemporaryDirectory(prefix="vxnet-master-bench-", dir=args.dir) as tmp:
        emit(
            metric="setup",
            vxnet=__version__,
            python=platform.python_version(),
            machine=platform.machine(),
            cpus=os.cpu_count(),
            masters=3,
            seconds_per_run=args.seconds,
            data_dir=tmp,
            fsync="SQLite WAL synchronous=FULL",
            client="one keep-alive HTTP/1.1 connection per client",
            tls=[("TLS 1.3, client certificates" if tls else "plain") for tls in modes],
        )
        figures = {
            tls: await run_mode(args, Path(tmp) / ("tls" if tls else "plain"), tls) for tls in modes
        }
        targets: dict[str, Any] = {"metric": "targets"}
        for tls, f in figures.items():
            name = "tls" if tls else "plain"
            targets[f"per_s_64_{name}"] = f["per_s_64"]
            targets[f"failover_s_{name}"] = f["failover_s"]
        per_s = [f["per_s_64"] for f in figures.values() if f["per_s_64"] is not None]
        failovers = [f["failover_s"] for f in figures.values()]
        targets["throughput_target_met"] = bool(per_s) and min(per_s) >= 1000
        targets["failover_target_met"] = all(s is not None and s < 3.0 for s in failovers)
        if len(figures) == 2:
            on, off = figures[True], figures[False]
            for key in ("per_s_1", "per_s_64", "burst_per_s"):
                if on[key] and off[key]:
                    targets[f"tls_over_plain_{key}"] = round(on[key] / off[key], 3)
            ratio = targets.get("tls_over_plain_per_s_64")
            targets["tls_target_met"] = ratio is not None and ratio >= 0.8
        emit(**targets)


async def run_mode(args: argparse.Namespace, root: Path, tls: bool) -> dict[str, Any]:
    """Every measure with TLS on or off; the figures the targets are read from."""
    ips = itertools.count(1)
    results: dict[int, Any] = {}
    with MasterProcesses(root, 3, NETWORK, tls=tls) as m:
        m.start_all()
        leader = await m.leader()
        await load(m, leader, 4, 1.0, ips)  # warm up
        for clients in args.clients:
            r = await load(m, leader, clients, args.seconds, ips)
            results[clients] = r
            emit(metric="registrations", tls=tls, **r)
        f = await failover(m, ips)
        emit(metric="failover", tls=tls, load_clients=FAILOVER_CLIENTS, **f)
    with MasterProcesses(root / "reads", 3, NETWORK, tls=tls) as m:
        m.start_all()
        leader = await m.leader()
        await load(m, leader, 4, 1.0, ips)  # warm up
        s = await state_reads(m, leader, args.burst_clients, args.seconds, ips)
        emit(metric="state_reads", tls=tls, **s)
    return {
        "per_s_1": results.get(1, {}).get("per_s"),
        "per_s_64": results.get(64, {}).get("per_s"),
        "burst_per_s": s["burst_registrations_per_s"],
        "failover_s": f["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per load run (default 5)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 64])
    parser.add_argument(
        "--burst-clients", type=int, default=64, help="registering during the state reads"
    )
    parser.add_argument("--dir", default=None, help="where the data directories go (a disk)")
    parser.add_argument(
        "--tls", choices=["both", "on", "off"], default="both", help="TLS and plain (default both)"
    )
    trio.run(bench, parser.parse_args())


with contextlib.suppress(KeyboardInterrupt):
    if __name__ == "__main__":
        main()
