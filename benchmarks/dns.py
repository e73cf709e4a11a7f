"""DNS queries per second: vxnet's DNS server against Knot DNS on the same 10,000-record zone.

For each count of ``--workers`` (default ``1,all``: one, and one per CPU), a `vxnet agent`
(overlay off, DNS on a loopback port, ``dns.workers`` set to that count) gets ``--records``
task records through its store API, and Knot (Debian ``knot``) with as many UDP threads serves a
zone file with the same names and addresses. dnsperf (Debian ``dnsperf``) sends A queries for
``--seconds`` seconds, 90 % for existing names and 10 % for names that do not exist, to each
server in turn (vxnet, Knot, vxnet, Knot, ...) for ``--rounds`` rounds, from one client socket
(``-c 1``) with one worker and from ``4 x workers`` sockets with more (the kernel spreads
sockets, not queries, over the workers of both servers). The CPU time (user + system, from
/proc) of each server's processes (the agent and its workers; knotd) over the run gives CPU
microseconds per query.

Figures (JSON lines after ``setup``): per run the server, workers, queries per second, average
latency, lost queries and CPU us per query; then per worker count a ``summary``: the medians and
vxnet's ratio to Knot (target >= 1.0, CPU per query at most Knot's).

    .venv/bin/python benchmarks/dns.py [--records 10000] [--seconds 10] [--rounds 3]
        [--workers 1,all] [--rate-limit 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from vxnet import __version__
from vxnet.records import TaskRecord
from vxnet.sandbox.knot import Knot, free_udp_tcp_port

ZONE = "dcos.thisdcos.directory"
TARGET = 1.0
PUT_WORKERS = 8


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def address(i: int) -> str:
    return f"9.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its children (an agent's DNS workers), user and system."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return total + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_agent(
    tmp: Path, rate_limit: int = 0, workers: int = 1
) -> tuple[subprocess.Popen[bytes], int, str]:
    port, api = free_udp_tcp_port(), free_udp_tcp_port()
    config = tmp / "agent.toml"
    config.write_text(
        f'[agent]\nlisten = "127.0.0.1:{api}"\noverlay = false\n'
        '[gossip]\nname = "dns-bench"\nbind = "127.0.0.1:0"\n'
        f'[dns]\nlisten = ["127.0.0.1:{port}"]\n'
        # dnsperf asks from one address, as fast as it can, and Knot has no RRL: 0 by default;
        # a limit no run reaches (10000000) measures what the accounting costs.
        f"rate_limit = {rate_limit}\nworkers = {workers}\n"
    )
    log = (tmp / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vxnet", "agent", "-c", str(config)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{api}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v1/records", trust_env=False).raise_for_status()
            return proc, port, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"dns benchmark: the agent did not start: {(tmp / 'agent.log').read_text()[-2000:]}")


def load(url: str, records: int) -> float:
    """Put the task records; seconds until the zone serves all of them."""
    import concurrent.futures

    start = time.monotonic()
    client = httpx.Client(trust_env=False)  # one for all: each new client builds an SSL context

    def put(i: int) -> None:
        record = TaskRecord(
            name=f"t{i}",
            framework="load",
            network="dcos",
            agent_ip="198.18.0.1",
            ip=address(i),
            runtime="api",
            container_id=f"t{i}",
        )
        key = TaskRecord.key_of(record.agent_ip, f"t{i}")
        client.put(f"{url}/v1/store/{key}", json=record.to_json()).raise_for_status()

    with client, concurrent.futures.ThreadPoolExecutor(PUT_WORKERS) as pool:
        list(pool.map(put, range(records)))
    while True:
        served = httpx.get(f"{url}/v1/records", trust_env=False).json()["records"]
        if sum(1 for r in served if r["type"] == "A" and ".containerip." in r["name"]) >= records:
            return time.monotonic() - start
        time.sleep(0.2)


def run_dnsperf(port: int, queries: Path, seconds: int, clients: int) -> dict[str, float]:
    done = subprocess.run(
        [
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-d",
            str(queries),
            "-c",
            str(clients),
            "-l",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    out = done.stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        if found is None:
            raise RuntimeError(f"dnsperf output without {pattern!r}:\n{out}\n{done.stderr}")
        return float(found.group(1))

    return {
        "qps": number(r"Queries per second:\s+([\d.]+)"),
        "completed": number(r"Queries completed:\s+(\d+)"),
        "lost": number(r"Queries lost:\s+(\d+)"),
        "avg_latency_ms": number(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=0,
        help="vxnet's dns.rate_limit (default 0: off, as Knot's RRL)",
    )
    parser.add_argument(
        "--workers",
        default="1,all",
        help="comma-separated worker counts to compare (all: one per CPU); default 1,all",
    )
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    counts = [cpus if w.strip() == "all" else int(w) for w in args.workers.split(",")]
    for tool, package in (("dnsperf", "dnsperf"), ("knotd", "knot")):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"dns benchmark: {tool} is missing: apt-get install {package}")
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="vxnet-dns-") as tmpdir:
        tmp = Path(tmpdir)
        queries = tmp / "queries.txt"
        lines = []
        for _ in range(100_000):
            if rng.random() < 0.9:
                lines.append(f"t{rng.randrange(args.records)}.load.containerip.{ZONE} A")
            else:
                lines.append(f"missing{rng.randrange(1_000_000)}.load.containerip.{ZONE} A")
        queries.write_text("\n".join(lines) + "\n")
        emit(
            metric="setup",
            vxnet=__version__,
            python=platform.python_version(),
            kernel=platform.release(),
            cpus=cpus,
            records=args.records,
            seconds=args.seconds,
            rounds=args.rounds,
            workers=counts,
            vxnet_rate_limit=args.rate_limit,
            dnsperf="-c 1 (one worker) or 4 x workers, 90 % existing names, 10 % NXDOMAIN, A",
            knot=subprocess.run(
                ["knotd", "--version"], capture_output=True, text=True
            ).stdout.strip(),
        )
        for workers in dict.fromkeys(counts):
            compare(args, tmp / f"w{workers}", queries, workers)


def compare(args: argparse.Namespace, tmp: Path, queries: Path, workers: int) -> None:
    """Both servers with ``workers`` workers, alternating; their runs and the summary."""
    tmp.mkdir()
    records = [f"t{i}.load.containerip 5 A {address(i)}" for i in range(args.records)]
    knot = Knot(tmp / "knot", ZONE, records, threads=workers).start()
    agent, port, url = start_agent(tmp, args.rate_limit, workers)
    clients = 1 if workers == 1 else 4 * workers
    try:
        loaded = load(url, args.records)
        emit(metric="loaded", workers=workers, vxnet_zone_loaded_s=round(loaded, 2))
        results: dict[str, list[dict[str, float]]] = {"vxnet": [], "knot": []}
        assert knot.proc is not None
        servers = {"vxnet": (port, agent.pid), "knot": (knot.port, knot.proc.pid)}
        for r in range(args.rounds):
            for name, (server_port, pid) in servers.items():
                cpu = cpu_seconds(pid)
                figures = run_dnsperf(server_port, queries, args.seconds, clients)
                used = cpu_seconds(pid) - cpu
                figures["cpu_us_per_query"] = used * 1e6 / max(figures["completed"], 1)
                results[name].append(figures)
                emit(
                    metric="run",
                    server=name,
                    workers=workers,
                    clients=clients,
                    round=r + 1,
                    **{k: round(v, 2) for k, v in figures.items()},
                )
        ours = statistics.median(f["qps"] for f in results["vxnet"])
        theirs = statistics.median(f["qps"] for f in results["knot"])
        our_cpu = statistics.median(f["cpu_us_per_query"] for f in results["vxnet"])
        their_cpu = statistics.median(f["cpu_us_per_query"] for f in results["knot"])
        emit(
            metric="summary",
            workers=workers,
            vxnet_qps=round(ours),
            knot_qps=round(theirs),
            ratio=round(ours / theirs, 3),
            vxnet_cpu_us_per_query=round(our_cpu, 1),
            knot_cpu_us_per_query=round(their_cpu, 1),
            target_ratio=TARGET,
            target_met=ours / theirs >= TARGET and our_cpu <= their_cpu,
        )
    finally:
        agent.terminate()
        agent.wait(timeout=15)
        knot.stop()


if __name__ == "__main__":
    main()
