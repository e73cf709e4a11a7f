"""The replicated log against etcd: appends per second, latency, and failover, on loopback.

Three vxnet log replicas (``vxnet log serve``, SQLite WAL with synchronous=FULL) and, in the same
run, a three-member etcd cluster (Debian ``etcd-server``, WAL fsync on) on loopback. Each client
appends 256-byte values one after another for ``--seconds``: vxnet through
:class:`vxnet.replog._client.LogClient`, etcd through its HTTP/JSON gateway (``/v3/kv/put``,
one keep-alive HTTP/1.1 connection per client, requests spread over the members as etcd's own client
does). Figures: appends per second, p50 and p99 latency, at 1 and 64 concurrent clients. Failover:
with 8 clients appending, SIGKILL the coordinator (etcd: the leader) and time from the kill to the
first append sent after it that is accepted (clients give up on a request after 0.25 s and
send another, so a request parked at a leaderless member does not hide the recovery).

vxnet runs twice: with TLS on the log port (``vxnet-tls``: TLS 1.3, certificates from a cluster
CA for peers and the client) and plain (``vxnet``, the one compared with etcd, which runs plain).

Prints JSON lines: ``setup``, one ``appends`` line per system and client count, one ``failover``
line per system, and ``targets`` (plain: throughput at 64 clients at least half of etcd's, p50 at
1 client under 2 ms, failover under 3 s; TLS: at least 0.8 of plain at 64 clients, p50 at 1
client under 2.5 ms, failover under 3 s).

    .venv/bin/python benchmarks/replog.py [--seconds 5] [--no-etcd]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import trio

from _rawhttp import RawHttp  # benchmarks/ is the script's directory
from vxnet import __version__
from vxnet.replog import AppendUncertain, LogUnavailable, open_log_client
from vxnet.testing.procs import LogProcesses, free_ports

VALUE_SIZE = 256
FAILOVER_CLIENTS = 8
LOAD_TIMEOUT = 5.0  # seconds a client waits for one append under load
FAILOVER_TIMEOUT = 0.25  # during failover: give up on a request this soon and send another


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Appender(Protocol):
    async def __call__(self, value: bytes) -> None: ...


class System(Protocol):
    name: str

    def client(
        self, index: int, patience: float
    ) -> contextlib.AbstractAsyncContextManager[Appender]: ...

    async def leader(self) -> int: ...

    def kill(self, i: int) -> None: ...


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def load(system: System, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    counter = itertools.count()
    stop_at = trio.current_time() + seconds

    async def worker(index: int) -> None:
        async with system.client(index, LOAD_TIMEOUT) as append:
            while trio.current_time() < stop_at:
                value = f"{next(counter):012d}".encode().ljust(VALUE_SIZE, b"x")
                t0 = time.perf_counter()
                try:
                    await append(value)
                except (AppendUncertain, LogUnavailable) as exc:
                    errors.append(str(exc))
                    continue
                latencies.append(time.perf_counter() - t0)

    wall = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(worker, i)
    wall = time.perf_counter() - wall
    latencies.sort()
    return {
        "clients": clients,
        "appends": len(latencies),
        "appends_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3) if latencies else None,
        "errors": len(errors),
        "seconds": round(wall, 2),
    }


async def failover(system: System) -> dict[str, Any]:
    """Kill the leader under load; seconds until an append sent after the kill is accepted."""
    killed_at: list[float] = []
    first_ok: list[float] = []
    done = trio.Event()
    counter = itertools.count()

    async def worker(index: int) -> None:
        async with system.client(index, FAILOVER_TIMEOUT) as append:
            while not done.is_set():
                sent = time.perf_counter()
                value = f"f{next(counter):011d}".encode().ljust(VALUE_SIZE, b"y")
                try:
                    await append(value)
                except (AppendUncertain, LogUnavailable):
                    await trio.sleep(0.01)
                    continue
                if killed_at and sent > killed_at[0] and not first_ok:
                    first_ok.append(time.perf_counter())
                    done.set()

    leader = await system.leader()
    with trio.move_on_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(FAILOVER_CLIENTS):
                nursery.start_soon(worker, i)
            await trio.sleep(1.0)
            killed_at.append(time.perf_counter())
            system.kill(leader)
            await done.wait()
            nursery.cancel_scope.cancel()
    seconds = first_ok[0] - killed_at[0] if first_ok else None
    return {"killed": leader, "seconds": None if seconds is None else round(seconds, 3)}


# --- vxnet --------------------------------------------------------------------------------------


class Vxnet:
    """Three vxnet log replicas; with ``tls``, TLS 1.3 with client certificates (peers and
    clients), the client holding an operator's certificate."""

    def __init__(self, root: Path, *, tls: bool = False) -> None:
        self.name = "vxnet-tls" if tls else "vxnet"
        self.cluster = LogProcesses(root, 3, tls=tls)

    def start(self) -> None:
        self.cluster.start_all()

    @contextlib.asynccontextmanager
    async def client(self, index: int, patience: float) -> Any:
        async with open_log_client(
            self.cluster.addresses, answer_within=patience, tls=self.cluster.client_tls
        ) as client:

            async def append(value: bytes) -> None:
                await client.append(value)

            yield append

    async def leader(self) -> int:
        return await self.cluster.leader()

    def kill(self, i: int) -> None:
        self.cluster.kill(i)

    def close(self) -> None:
        self.cluster.close()


# --- etcd ---------------------------------------------------------------------------------------


class Etcd:
    name = "etcd"

    def __init__(self, root: Path) -> None:
        self.root = root
        ports = free_ports(6)
        self.client_ports, self.peer_ports = ports[:3], ports[3:]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.urls = [f"http://127.0.0.1:{p}" for p in self.client_ports]
        self._alive = set(range(3))

    def start(self) -> None:
        cluster = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer_ports))
        for i in range(3):
            log = (self.root / f"etcd{i}.log").open("ab")
            self.procs[i] = subprocess.Popen(
                [
                    "etcd",
                    f"--name=e{i}",
                    f"--data-dir={self.root / f'etcd{i}'}",
                    f"--listen-client-urls={self.urls[i]}",
                    f"--advertise-client-urls={self.urls[i]}",
                    f"--listen-peer-urls=http://127.0.0.1:{self.peer_ports[i]}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{self.peer_ports[i]}",
                    f"--initial-cluster={cluster}",
                    "--initial-cluster-state=new",
                    "--initial-cluster-token=vxnet-bench",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            log.close()

    async def _status(self, i: int) -> dict[str, Any] | None:
        try:
            with trio.fail_after(1.0):
                conn = await RawHttp.connect("127.0.0.1", self.client_ports[i])
                try:
                    status, text = await conn.post("/v3/maintenance/status", b"{}")
                finally:
                    await conn.aclose()
            return dict(json.loads(text)) if status == 200 else None
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, EOFError, ValueError):
            return None

    async def leader(self) -> int:
        with trio.move_on_after(30):
            while True:
                for i in sorted(self._alive):
                    s = await self._status(i)
                    if s and s.get("leader") and s["leader"] == s["header"]["member_id"]:
                        return i
                await trio.sleep(0.1)
        raise TimeoutError("no etcd leader in 30 s")

    @contextlib.asynccontextmanager
    async def client(self, index: int, patience: float) -> Any:
        state = {"member": sorted(self._alive)[index % len(self._alive)]}
        conn: list[RawHttp] = []

        async def append(value: bytes) -> None:
            body = json.dumps(
                {
                    "key": base64.b64encode(b"bench/" + value[:12]).decode(),
                    "value": base64.b64encode(value).decode(),
                }
            ).encode()
            try:
                if not conn:
                    port = self.client_ports[state["member"]]
                    conn.append(await RawHttp.connect("127.0.0.1", port))
                with trio.fail_after(patience):
                    status, text = await conn[0].post("/v3/kv/put", body)
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, EOFError) as exc:
                if conn:
                    await conn.pop().aclose()
                alive = sorted(self._alive)
                member = state["member"]
                state["member"] = (
                    alive[(alive.index(member) + 1) % len(alive)] if (member in alive) else alive[0]
                )
                raise LogUnavailable(f"etcd: {exc!r}") from None
            if status != 200:
                raise LogUnavailable(f"etcd: HTTP {status}: {text[:200]!r}")

        try:
            yield append
        finally:
            if conn:
                await conn.pop().aclose()

    def kill(self, i: int) -> None:
        self._alive.discard(i)
        proc = self.procs.pop(i)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()


def etcd_version() -> str:
    out = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="vxnet-replog-", dir=args.dir) as tmp:
        root = Path(tmp)
        systems: list[Any] = [Vxnet(root / "vxnet-tls", tls=True), Vxnet(root / "vxnet")]
        if args.etcd:
            (root / "etcd").mkdir()
            systems.append(Etcd(root / "etcd"))
        emit(
            metric="setup",
            vxnet=__version__,
            etcd=etcd_version() if args.etcd else None,
            python=platform.python_version(),
            machine=platform.machine(),
            cpus=os.cpu_count(),
            replicas=3,
            value_bytes=VALUE_SIZE,
            seconds_per_run=args.seconds,
            data_dir=tmp,
            fsync="vxnet: SQLite WAL synchronous=FULL; etcd: WAL fsync (default)",
        )
        results: dict[tuple[str, Any], dict[str, Any]] = {}
        try:
            for system in systems:
                system.start()
                await system.leader()
                await load(system, 4, 1.0)  # warm up
                for clients in args.clients:
                    r = await load(system, clients, args.seconds)
                    results[(system.name, clients)] = r
                    emit(metric="appends", system=system.name, **r)
                f = await failover(system)
                results[(system.name, "failover")] = f
                emit(metric="failover", system=system.name, load_clients=FAILOVER_CLIENTS, **f)
                system.close()
        finally:
            for system in systems:
                system.close()
        ours64 = results.get(("vxnet", 64), {}).get("appends_per_s")
        etcd64 = results.get(("etcd", 64), {}).get("appends_per_s")
        p50 = results.get(("vxnet", 1), {}).get("p50_ms")
        fo = results.get(("vxnet", "failover"), {}).get("seconds")
        ratio = round(ours64 / etcd64, 2) if ours64 and etcd64 else None
        tls64 = results.get(("vxnet-tls", 64), {}).get("appends_per_s")
        tls_ratio = round(tls64 / ours64, 3) if tls64 and ours64 else None
        tls_p50 = results.get(("vxnet-tls", 1), {}).get("p50_ms")
        tls_fo = results.get(("vxnet-tls", "failover"), {}).get("seconds")
        emit(
            metric="targets",
            throughput_64_vs_etcd=ratio,
            throughput_target_met=None if ratio is None else ratio >= 0.5,
            p50_1_client_ms=p50,
            p50_target_met=None if p50 is None else p50 < 2.0,
            failover_s=fo,
            failover_target_met=None if fo is None else fo < 3.0,
            tls_over_plain_64=tls_ratio,
            tls_throughput_target_met=None if tls_ratio is None else tls_ratio >= 0.8,
            tls_p50_1_client_ms=tls_p50,
            tls_p50_target_met=None if tls_p50 is None else tls_p50 < 2.5,
            tls_failover_s=tls_fo,
            tls_failover_target_met=None if tls_fo is None else tls_fo < 3.0,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per load run (default 5)")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 64], help="client counts (default 1 64)"
    )
    parser.add_argument("--no-etcd", dest="etcd", action="store_false", help="vxnet only")
    parser.add_argument("--dir", default=None, help="where the data directories go (a disk)")
    args = parser.parse_args()
    if args.etcd and shutil.which("etcd") is None:
        sys.exit("etcd is not installed (apt-get install etcd-server), or pass --no-etcd")
    trio.run(bench, args)


if __name__ == "__main__":
    main()
