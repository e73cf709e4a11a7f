"""CNI IPAM latency: ``vxnet-ipam`` (a process asking the agent) against Debian's ``host-local``.

A lab cluster (one master, two agents, real processes) gives the agents their allocations;
then, from this process, ``--pairs`` times: ADD (one container id) then DEL through
``vxnet-ipam`` (a new Python process each time, its start-up included, talking to the agent over
its unix socket; the agent fsyncs its lease file before answering), and the same through
``host-local`` (a Go binary writing its lease files in a temporary directory) on a range of the
same size, the two interleaved pair by pair so that the machine's slow moments hit both.
Both run exactly as a runtime runs an IPAM plugin: environment, configuration on stdin, result
on stdout. Only the unix socket is shared with the lab host (sockets are files, not part of a
network namespace); no address is configured anywhere.

Figures (JSON lines after ``setup``): per plugin the ADD latency p50/p99/mean in ms, DEL p50,
and ADD+DEL pairs per second (serial, from the summed call times); then ``summary`` with the
p50 ratio to host-local and the issue's target (within 3x).

    .venv/bin/python benchmarks/ipam.py [--pairs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vxnet import __version__
from vxnet.config import NetworkConfig
from vxnet.sandbox.cluster import LabCluster
from vxnet.sandbox.cni import CniError, find_plugin_dir
from vxnet.sandbox.lab import Lab

TARGET_RATIO = 3.0


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def call(plugin: str, command: str, cid: str, conf: dict[str, Any]) -> float:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": "/dev/null",
        "CNI_PATH": str(Path(plugin).parent),
    }
    start = time.perf_counter()
    done = subprocess.run(
        [plugin], input=json.dumps(conf), capture_output=True, text=True, env=env, timeout=30
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{Path(plugin).name} {command} {cid}: {done.stdout}{done.stderr}")
    return took


def measure(plugins: dict[str, tuple[str, dict[str, Any]]], pairs: int) -> dict[str, Any]:
    """ADD then DEL ``pairs`` times through every plugin, interleaved (one pair of each in
    turn), so that the machine's slow moments fall on all of them alike."""
    adds: dict[str, list[float]] = {name: [] for name in plugins}
    dels: dict[str, list[float]] = {name: [] for name in plugins}
    walls = dict.fromkeys(plugins, 0.0)
    for plugin, conf in plugins.values():
        for i in range(5):  # warm the page cache and the agent
            call(plugin, "ADD", f"warm{i}", conf)
            call(plugin, "DEL", f"warm{i}", conf)
    for i in range(pairs):
        for name, (plugin, conf) in plugins.items():
            add = call(plugin, "ADD", f"bench{i}", conf)
            delete = call(plugin, "DEL", f"bench{i}", conf)
            adds[name].append(add)
            dels[name].append(delete)
            walls[name] += add + delete
    figures: dict[str, Any] = {}
    for name in plugins:
        times = sorted(adds[name])
        figures[name] = {
            "metric": "ipam",
            "plugin": name,
            "pairs": pairs,
            "add_p50_ms": round(statistics.median(times) * 1000, 2),
            "add_p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1000, 2),
            "add_mean_ms": round(statistics.fmean(times) * 1000, 2),
            "del_p50_ms": round(statistics.median(dels[name]) * 1000, 2),
            "pairs_per_s": round(pairs / walls[name], 1),
        }
        emit(**figures[name])
    return figures


def bench(pairs: int) -> None:
    plugins = find_plugin_dir()
    with (
        tempfile.TemporaryDirectory(prefix="vxnet-ipam-") as tmpdir,
        Lab(["master", "a1", "a2"]) as lab,
    ):
        tmp = Path(tmpdir)
        cluster = LabCluster(
            lab, tmp, lab.host("master"), [lab.host("a1"), lab.host("a2")], NetworkConfig()
        )
        cluster.start()
        try:
            cluster.wait_converged()
        except TimeoutError as exc:
            sys.exit(f"ipam benchmark: {exc}")
        a1 = lab.host("a1")
        conflist = json.loads((cluster.state_dir(a1) / "cni" / "dcos.conflist").read_text())
        ipam = conflist["plugins"][0]["ipam"]
        vxnet_conf = {"cniVersion": "1.0.0", "name": "dcos", "ipam": ipam}
        local_conf = {
            "cniVersion": "1.0.0",
            "name": "bench",
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.99.0.0/25", "gateway": "10.99.0.1"}]],
                "dataDir": str(tmp / "host-local"),
            },
        }
        emit(
            metric="setup",
            vxnet=__version__,
            python=platform.python_version(),
            kernel=platform.release(),
            cpus=os.cpu_count(),
            pairs=pairs,
            vxnet_plugin=str(cluster.state_dir(a1) / "bin" / "vxnet-ipam"),
            reference=f"{plugins}/host-local (containernetworking-plugins)",
            range="/25 for both (125 addresses)",
        )
        figures = measure(
            {
                "vxnet-ipam": (str(cluster.state_dir(a1) / "bin" / "vxnet-ipam"), vxnet_conf),
                "host-local": (f"{plugins}/host-local", local_conf),
            },
            pairs,
        )
        ours, theirs = figures["vxnet-ipam"], figures["host-local"]
        ratio = ours["add_p50_ms"] / theirs["add_p50_ms"]
        emit(
            metric="summary",
            add_p50_ratio=round(ratio, 2),
            target_ratio=TARGET_RATIO,
            target_met=ratio <= TARGET_RATIO,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200, help="ADD+DEL pairs per plugin")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("ipam benchmark: run as root (it builds network namespaces)")
    try:
        find_plugin_dir()
    except CniError as exc:
        sys.exit(f"ipam benchmark: {exc.msg}")
    bench(args.pairs)


if __name__ == "__main__":
    main()
