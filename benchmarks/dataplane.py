"""Data-plane throughput: container to container over the overlay against host to host.

A lab of three hosts (network namespaces on one underlay bridge, MTU 1500): ``master`` runs
``vxnet master``, ``a1`` and ``a2`` run ``vxnet agent`` (IPv4-only network ``dcos``, 9.0.0.0/8,
a /24 per agent). Once both agents have programmed each other (route, neighbour and FDB entry,
all as desired), one container per agent host is attached with the ``dcos.conflist`` its agent
wrote, as a container runtime would. iperf3 then measures TCP throughput, in the same run:

* ``underlay``: host ``a1`` -> host ``a2`` over their ``eth0`` (the reference);
* ``overlay``: container on ``a1`` -> container on ``a2``: the container's veth, the agent's
  bridge, routing onto ``vtep1024``, VxLAN encapsulation over the same underlay, and back.

Each measurement is one ``iperf3 -c <ip> -t --seconds -P --streams -J`` against a one-shot
``iperf3 -s -1`` in the receiver; the figure is ``end.sum_received.bits_per_second`` (what the
receiver got), with the sender's TCP retransmits and both ends' CPU use as iperf3 reports them.
``--rounds`` rounds, each one underlay and one overlay run (the order alternates from round to
round, so neither path always runs first).

All lab hosts live on this one machine, so where their work runs is a choice, and the benchmark
measures both choices in the same run (``--cpus`` picks one):

* ``per-host`` (needs two CPUs; the target is judged here): each host has a CPU of its own, as
  two machines would. The sender's iperf3 is pinned to the first CPU this process may use and
  the receiver's to the second, and each host's receive processing is steered to its CPU (RPS
  on its underlay ``eth0``). Host ``a1``'s TCP and encapsulation run on the first CPU, ``a2``'s
  decapsulation, forwarding and TCP on the second.
* ``shared``: no pinning and no steering. Packets are handled to the end on the CPU that sent
  them, so one CPU does both hosts' work: this compares the CPU cost per byte of the two paths
  more than their throughput, and the overlay's extra hops (two forwarding and FIB lookups, two
  bridges, encapsulation and decapsulation) all land on that one CPU.

Figures (JSON lines, after a ``setup`` line with versions, machine, MTUs and parameters): one
``throughput`` line per run, then one ``summary`` line per CPU placement with the median of each
path and their ratio, overlay / underlay, beside the target (at least 0.80, judged on
``per-host``). The figures compare the two paths on this machine; they are not a network's line
rate.

Needs root (it builds network namespaces), iperf3 (Debian package iperf3) and the CNI plugins
(containernetworking-plugins); nothing is configured outside the lab's namespaces and the lab
removes everything it built.

    .venv/bin/python benchmarks/dataplane.py [--seconds 5] [--rounds 5] [--streams 1]
        [--cpus both|per-host|shared]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from vxnet import __version__
from vxnet.config import NetworkConfig
from vxnet.sandbox.cluster import LabCluster
from vxnet.sandbox.cni import CniError, find_plugin_dir
from vxnet.sandbox.lab import Lab

if TYPE_CHECKING:
    from vxnet.sandbox.lab import Namespace

NETWORK = NetworkConfig()  # the default: dcos, 9.0.0.0/8, IPv4 only
TARGET_RATIO = 0.80
CONVERGE_TIMEOUT = 60.0
IPERF_PORT = 5201


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"dataplane: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def requirements() -> str:
    """The iperf3 binary; exits 2 naming what is missing."""
    if os.geteuid() != 0:
        fail("needs root: the benchmark builds network namespaces", 2)
    iperf3 = shutil.which("iperf3") or "/usr/bin/iperf3"
    if not Path(iperf3).is_file():
        fail("iperf3 not found: install the package iperf3 (apt-get install iperf3)", 2)
    try:
        find_plugin_dir()
    except CniError as exc:
        fail(exc.msg, 2)
    return iperf3


def mtu(ns: Namespace, dev: str) -> int:
    return int(json.loads(ns.run(["ip", "-j", "link", "show", dev]).stdout)[0]["mtu"])


def listening(ns: Namespace, port: int) -> bool:
    out = ns.run(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
    return bool(out.strip())


def steer(host: Namespace, cpu: int | None) -> None:
    """Steer receive processing on ``host``'s ``eth0`` to ``cpu`` (RPS), or back to none."""
    mask = "0" if cpu is None else format(1 << cpu, "x")
    # sysfs shows the devices of the namespace that mounted it: ip netns exec mounts the lab
    # host's own, in a mount namespace of the command's own.
    netns = Path(host.netns_path).name
    path = "/sys/class/net/eth0/queues/rx-0/rps_cpus"
    subprocess.run(
        ["ip", "netns", "exec", netns, "sh", "-c", f"echo {mask} > {path}"],
        check=True,
        capture_output=True,
        timeout=10,
    )


def measure(
    iperf3: str,
    sender: Namespace,
    receiver: Namespace,
    address: str,
    seconds: int,
    streams: int,
    pinned: tuple[int, int] | None,
) -> dict[str, Any]:
    """One iperf3 run from ``sender`` to ``address`` (in ``receiver``): its figures.

    ``pinned``: the CPUs of the client and the server (iperf3 ``-A``), or None for no pinning.
    """
    server = receiver.spawn([iperf3, "-s", "-1", "-p", str(IPERF_PORT)])
    try:
        deadline = time.monotonic() + 10
        while not listening(receiver, IPERF_PORT):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 server in {receiver.name} did not start")
            time.sleep(0.05)
        argv = [iperf3, "-c", address, "-p", str(IPERF_PORT), "-t", str(seconds)]
        argv += ["-P", str(streams), "-J", "--connect-timeout", "5000"]
        if pinned is not None:
            argv += ["-A", f"{pinned[0]},{pinned[1]}"]
        client = sender.run(argv, check=False, timeout=seconds + 30)
        try:
            report = json.loads(client.stdout)
        except ValueError:
            report = {"error": client.stderr.strip() or client.stdout.strip()}
        if client.returncode != 0 or "error" in report:
            raise RuntimeError(
                f"iperf3 {sender.name} -> {address} exited {client.returncode}: "
                f"{report.get('error', '')}"
            )
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=5)
    end = report["end"]
    cpu = end.get("cpu_utilization_percent", {})
    return {
        "gbps": round(end["sum_received"]["bits_per_second"] / 1e9, 3),
        "retransmits": end["sum_sent"].get("retransmits"),
        "sender_cpu_pct": round(cpu.get("host_total", 0.0), 1),
        "receiver_cpu_pct": round(cpu.get("remote_total", 0.0), 1),
    }


def bench(iperf3: str, seconds: int, rounds: int, streams: int, placements: list[str]) -> None:
    version = subprocess.run(
        [iperf3, "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    with (
        tempfile.TemporaryDirectory(prefix="vxnet-dataplane-") as tmpdir,
        Lab(["master", "a1", "a2"]) as lab,
    ):
        cluster = LabCluster(
            lab, Path(tmpdir), lab.host("master"), [lab.host("a1"), lab.host("a2")], NETWORK
        )
        started = time.monotonic()
        cluster.start()
        try:
            cluster.wait_converged(timeout=CONVERGE_TIMEOUT)
            converged_s = time.monotonic() - started
            one, two = (cluster.attach(h) for h in cluster.agents)
            c1, c2 = one.container, two.container
            ip1, ip2 = str(one.ip), str(two.ip)
        except Exception as exc:
            print(cluster.logs(), file=sys.stderr)
            fail(f"building the cluster: {exc}")
        a1, a2 = cluster.agents
        for source, target in ((a1, str(a2.address)), (c1, ip2)):
            ping = source.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", target], check=False)
            if ping.returncode != 0:
                print(cluster.logs(), file=sys.stderr)
                fail(f"{source.name} cannot reach {target}: {ping.stdout}{ping.stderr}")
        emit(
            metric="setup",
            vxnet=__version__,
            python=platform.python_version(),
            iperf3=version,
            kernel=platform.release(),
            machine=platform.machine(),
            cpus=os.cpu_count(),
            seconds=seconds,
            rounds=rounds,
            streams=streams,
            cpu_placements=placements,
            underlay_mtu=mtu(a1, "eth0"),
            overlay_mtu=mtu(c1, "eth0"),
            vtep_mtu=mtu(a1, "vtep1024"),
            underlay=f"{a1.address} -> {a2.address}",
            overlay=f"{ip1} -> {ip2}",
            converged_s=round(converged_s, 2),
        )
        paths = {
            "underlay": (a1, a2, str(a2.address)),
            "overlay": (c1, c2, ip2),
        }
        usable = sorted(os.sched_getaffinity(0))
        cpu1, cpu2 = usable[0], usable[min(1, len(usable) - 1)]
        for placement in placements:
            per_host = placement == "per-host"
            steer(a1, cpu1 if per_host else None)
            steer(a2, cpu2 if per_host else None)
            results: dict[str, list[float]] = {name: [] for name in paths}
            for r in range(1, rounds + 1):
                order = list(paths) if r % 2 else list(reversed(paths))
                for name in order:
                    sender, receiver, address = paths[name]
                    try:
                        figures = measure(
                            iperf3,
                            sender,
                            receiver,
                            address,
                            seconds,
                            streams,
                            (cpu1, cpu2) if per_host else None,
                        )
                    except Exception as exc:
                        fail(str(exc))
                    results[name].append(figures["gbps"])
                    emit(metric="throughput", cpus=placement, path=name, round=r, **figures)
            underlay = statistics.median(results["underlay"])
            overlay = statistics.median(results["overlay"])
            ratio = overlay / underlay if underlay else 0.0
            emit(
                metric="summary",
                cpus=placement,
                underlay_median_gbps=round(underlay, 3),
                overlay_median_gbps=round(overlay, 3),
                ratio=round(ratio, 3),
                target_ratio=TARGET_RATIO,
                target_met=ratio >= TARGET_RATIO if per_host else None,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="seconds per run (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each path (default 5)")
    parser.add_argument(
        "--streams", type=int, default=1, help="parallel TCP streams, iperf3 -P (default 1)"
    )
    parser.add_argument(
        "--cpus",
        choices=["both", "per-host", "shared"],
        default="both",
        help="where the hosts' work runs: a CPU per host, one shared, or both in turn (default)",
    )
    args = parser.parse_args()
    if args.seconds < 1 or args.rounds < 1 or not 1 <= args.streams <= 128:
        parser.error("--seconds and --rounds must be at least 1, --streams 1 to 128")
    placements = ["per-host", "shared"] if args.cpus == "both" else [args.cpus]
    if "per-host" in placements and len(os.sched_getaffinity(0)) < 2:
        if args.cpus == "per-host":
            fail("--cpus per-host needs two CPUs; this process may use one", 2)
        print("dataplane: one CPU only: measuring --cpus shared", file=sys.stderr)
        placements = ["shared"]
    iperf3 = requirements()
    bench(iperf3, args.seconds, args.rounds, args.streams, placements)


with contextlib.suppress(KeyboardInterrupt):
    if __name__ == "__main__":
        main()
