"""A DNS flood against an agent: does the rest of the agent keep its deadlines?

Two `vxnet agent` processes (overlay off) gossip on loopback; one serves DNS. For ``--seconds``
each, first quiet, then under ``--flooders`` flood processes (``vxnet.testing.dnsflood``: valid
questions, unique NXDOMAIN names, malformed packets and pointer chains from 4 sockets each, as
fast as they can), the benchmark samples the flooded agent's API every 50 ms and reads both
agents' metrics. The quiet phase is the reference the flood phase is printed beside.

Figures (JSON lines after ``setup``), per phase: the flooded agent's gossip probe round trips
(count, p99 as the histogram bucket it falls in), suspicions raised by either agent, the API's
p50/p99/max, queries offered by the flooders and answered by the agent per second, kernel drops
and rate-limited answers; then ``targets``: probe p99 under 50 ms and 0 suspicions under the
flood, and the flood's offered/answered ratio (the load was at least that many times what the
server answered).

    .venv/bin/python benchmarks/dns_flood.py [--seconds 20] [--flooders 2] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from vxnet import __version__
from vxnet.gossip._membership_types import PROBE_BUCKETS
from vxnet.testing.procs import free_ports


def start(
    tmp: Path, name: str, dns_port: int, api: int, gossip: int, seed: int | None, workers: str
) -> Any:
    seeds = json.dumps([f"127.0.0.1:{seed}"] if seed else [])
    config = tmp / f"{name}.toml"
    config.write_text(
        f'[agent]\nlisten = "127.0.0.1:{api}"\noverlay = false\n'
        f'[gossip]\nname = "{name}"\nbind = "127.0.0.1:{gossip}"\nseeds = {seeds}\n'
        f'[dns]\nlisten = ["127.0.0.1:{dns_port}"]\n'
        + ("" if workers == "default" else f"workers = {int(workers)}\n")
    )
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "vxnet", "agent", "-c", str(config)], stdout=log, stderr=log
    )


def metrics(http: httpx.Client, api: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in http.get(f"{api}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def probe_p99(before: dict[str, float], after: dict[str, float]) -> tuple[int, float | None]:
    """Probes answered between the two scrapes, and the bucket bound their p99 falls in."""
    bounds = [*(str(b) for b in PROBE_BUCKETS), "+Inf"]
    counts = [
        after.get(f'vxnet_gossip_probe_seconds_bucket{{le="{b}"}}', 0)
        - before.get(f'vxnet_gossip_probe_seconds_bucket{{le="{b}"}}', 0)
        for b in bounds
    ]
    total = counts[-1]
    if not total:
        return 0, None
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= 0.99 * total:
            return int(total), float(bound) if bound != "+Inf" else float("inf")
    return int(total), None


def answered(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if k.startswith("vxnet_dns_queries_total"))


def phase(
    http: httpx.Client, api: str, peer_api: str, seconds: float, flooders: int, dns_port: int
) -> dict[str, Any]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vxnet.testing.dnsflood", str(dns_port), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(flooders)
    ]
    before, peer_before = metrics(http, api), metrics(http, peer_api)
    start = time.monotonic()
    latencies = []
    while time.monotonic() - start < seconds:
        began = time.monotonic()
        http.get(f"{api}/v1/members").raise_for_status()
        latencies.append(time.monotonic() - began)
        time.sleep(0.05)
    took = time.monotonic() - start
    after, peer_after = metrics(http, api), metrics(http, peer_api)
    sent = sum(int(p.communicate(timeout=seconds + 30)[0].strip() or 0) for p in procs)
    probes, p99 = probe_p99(before, after)
    latencies.sort()
    return {
        "flooders": flooders,
        "seconds": round(took, 1),
        "probes": probes,
        "probe_p99_le_s": p99,
        "suspicions": int(
            after["vxnet_gossip_suspicions_total"]
            - before["vxnet_gossip_suspicions_total"]
            + peer_after["vxnet_gossip_suspicions_total"]
            - peer_before["vxnet_gossip_suspicions_total"]
        ),
        "api_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "api_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "api_max_ms": round(latencies[-1] * 1000, 2),
        "offered_per_s": round(sent / took),
        "answered_per_s": round((answered(after) - answered(before)) / took),
        "kernel_drops": int(
            after.get("vxnet_dns_kernel_drops_total", 0)
            - before.get("vxnet_dns_kernel_drops_total", 0)
        ),
        "rate_limited": int(
            after.get("vxnet_dns_rate_limited_total", 0)
            - before.get("vxnet_dns_rate_limited_total", 0)
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flooders", type=int, default=2)
    parser.add_argument(
        "--workers",
        default="default",
        help="the flooded agent's dns.workers (default: its default, one per CPU; 0: in-agent)",
    )
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "metric": "setup",
                "vxnet": __version__,
                "python": platform.python_version(),
                "cpus": len(__import__("os").sched_getaffinity(0)),
                "seconds": args.seconds,
                "flooders": args.flooders,
                "workers": args.workers,
                "flood": "vxnet.testing.dnsflood: 5/8 valid, 2/8 NXDOMAIN, 1/8 malformed",
            }
        ),
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="vxnet-dns-flood-"))
    dns_port, api, gossip, peer_dns, peer_api, peer_gossip = free_ports(6)
    agents = [
        start(tmp, "flooded", dns_port, api, gossip, None, args.workers),
        start(tmp, "peer", peer_dns, peer_api, peer_gossip, gossip, "0"),
    ]
    try:
        with httpx.Client(trust_env=False, timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    members = http.get(f"http://127.0.0.1:{peer_api}/v1/members").json()
                    met = any(
                        m["status"] == "alive" for m in members["members"] if m["name"] == "flooded"
                    )
                    # the flooded agent's API starts after its DNS (and its workers)
                    if met and http.get(f"http://127.0.0.1:{api}/v1/members").is_success:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the agents never met")
                time.sleep(0.1)
            urls = f"http://127.0.0.1:{api}", f"http://127.0.0.1:{peer_api}"
            quiet = phase(http, *urls, args.seconds, 0, dns_port)
            print(json.dumps({"metric": "phase", "phase": "quiet", **quiet}), flush=True)
            loud = phase(http, *urls, args.seconds, args.flooders, dns_port)
            print(json.dumps({"metric": "phase", "phase": "flood", **loud}), flush=True)
        p99 = loud["probe_p99_le_s"]
        print(
            json.dumps(
                {
                    "metric": "targets",
                    "probe_p99_flood_le_ms": None if p99 is None else p99 * 1000,
                    "probe_p99_quiet_le_ms": None
                    if quiet["probe_p99_le_s"] is None
                    else quiet["probe_p99_le_s"] * 1000,
                    "probe_target_met": p99 is not None and p99 <= 0.05,
                    "suspicions_flood": loud["suspicions"],
                    "suspicions_target_met": loud["suspicions"] == 0,
                    "offered_over_answered": round(
                        loud["offered_per_s"] / max(loud["answered_per_s"], 1), 2
                    ),
                }
            ),
            flush=True,
        )
    finally:
        for proc in agents:
            proc.terminate()
        for proc in agents:
            proc.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
