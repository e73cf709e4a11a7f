"""Real processes in lab namespaces: one master, three agents, containers attached by the CNI
``bridge`` plugin with the conflists the agents write; the kernel's VxLAN carries their traffic.

The tests run in file order on one cluster (it takes ~10 s to build): reachability, MTU, egress
NAT and status first, then the ones that disturb it (a route deleted by hand, a restart, a
SIGKILL, egress NAT switched off), each leaving the cluster whole again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from vxnet.sandbox.cluster import LabCluster
from vxnet.sandbox.lab import Container, Host, Lab, LabError
from waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.lab

GRACE = 15  # gossip.record_grace of the agents: a restart must fit in it


def routes(host: Host) -> list[dict[str, Any]]:
    out = host.run(["ip", "-j", "route", "show", "proto", "44"], check=False).stdout
    out6 = host.run(["ip", "-j", "-6", "route", "show", "proto", "44"], check=False).stdout
    return [r for text in (out, out6) if text.strip() for r in json.loads(text)]


def fdb(host: Host) -> str:
    return host.run(["bridge", "fdb", "show", "dev", "vtep1024"], check=False).stdout


@dataclass
class Cluster:
    lc: LabCluster
    ext: Host
    containers: dict[str, Container] = field(default_factory=dict)
    ip4: dict[str, str] = field(default_factory=dict)
    ip6: dict[str, str] = field(default_factory=dict)

    @property
    def agents(self) -> list[Host]:
        return self.lc.agents

    def converged(self, host: Host) -> bool:
        return self.lc.converged(host)

    def status(self, host: Host) -> dict[str, Any]:
        return self.lc.status(host)

    def attach(self, host: Host) -> None:
        attachment = self.lc.attach(host)
        assert attachment.ip is not None
        assert attachment.ip6 is not None
        self.ip4[host.name], self.ip6[host.name] = attachment.ip, attachment.ip6
        self.containers[host.name] = attachment.container


def ping(
    source: Container, target: str, *, count: int = 1, interval: float = 0.2, size: int = 56
) -> subprocess.CompletedProcess[str]:
    argv = ["ping", "-c", str(count), "-i", str(interval), "-W", "2", "-s", str(size), target]
    return source.run(argv, check=False, timeout=60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("overlay")
    with Lab(["master", "a1", "a2", "a3", "ext"]) as lab:
        agents = [lab.host(n) for n in ("a1", "a2", "a3")]
        lc = LabCluster(lab, tmp, lab.host("master"), agents, record_grace=GRACE)
        c = Cluster(lc, lab.host("ext"))
        lc.start()
        try:
            lc.wait_converged()
            for host in agents:
                c.attach(host)
        except BaseException:
            print(lc.logs())
            raise
        yield c
        print(lc.logs())


def pairs(c: Cluster) -> list[tuple[str, str]]:
    names = [h.name for h in c.agents]
    return [(a, b) for a in names for b in names if a != b]


def test_every_container_pings_every_container_on_other_hosts_ipv4_and_ipv6(
    cluster: Cluster,
) -> None:
    c = cluster
    assert len(c.ip4) == 3, c.ip4
    assert len(c.ip6) == 3, c.ip6
    runs = []
    for a, b in pairs(c):
        for target in (c.ip4[b], c.ip6[b]):
            argv = ["ping", "-c", "3", "-i", "0.2", "-W", "2", target]
            runs.append(
                (
                    a,
                    target,
                    subprocess.Popen(
                        c.containers[a].command(argv),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    ),
                )
            )
    failed = []
    for a, target, proc in runs:
        out, _ = proc.communicate(timeout=30)
        if proc.returncode != 0:
            failed.append(f"{a} -> {target}: {out}")
    assert not failed, "\n".join(failed)


def test_a_full_size_packet_passes_and_a_larger_one_is_refused_locally(cluster: Cluster) -> None:
    c = cluster
    source = c.containers["a1"]
    fits = source.run(
        ["ping", "-M", "do", "-c", "2", "-W", "2", "-s", "1392", c.ip4["a2"]], check=False
    )
    assert fits.returncode == 0, fits.stdout + fits.stderr
    big = source.run(
        ["ping", "-M", "do", "-c", "1", "-W", "2", "-s", "1393", c.ip4["a2"]], check=False
    )
    assert big.returncode != 0
    # refused by the sender's own stack (the interface MTU is 1420), not lost on the way
    assert "mtu=1420" in big.stdout + big.stderr, big.stdout + big.stderr
    link = json.loads(source.run(["ip", "-j", "link", "show", "eth0"]).stdout)[0]
    assert link["mtu"] == 1420


def test_egress_nat_lets_containers_reach_the_underlay(cluster: Cluster) -> None:
    c = cluster
    result = ping(c.containers["a1"], str(c.ext.address), count=2)
    assert result.returncode == 0, result.stdout + result.stderr
    tables = c.agents[0].run(["nft", "list", "tables"]).stdout
    assert "table ip vxnet" in tables
    assert "table ip6 vxnet" in tables


def test_overlay_status_and_agent_info(cluster: Cluster) -> None:
    c = cluster
    a1 = c.agents[0]
    out = a1.run([sys.executable, "-m", "vxnet", "overlay", "status"]).stdout
    print(out)
    assert "10 kernel objects, all as desired" in out, out
    assert "egress NAT: on;" in out, out
    assert "remote agents: 2" in out, out
    for other in c.agents[1:]:
        assert f"dst {other.address} dev vtep1024 self permanent" in out, out
    script = (
        "import json, httpx; print(json.dumps(httpx.get("
        "'http://127.0.0.1:62080/overlay-agent/overlay', trust_env=False).json()))"
    )
    info = json.loads(a1.run([sys.executable, "-c", script]).stdout)
    assert info["ip"] == str(a1.address)
    (overlay,) = info["overlays"]
    assert overlay["state"] == {"status": "STATUS_OK"}
    assert overlay["backend"]["vxlan"]["vtep_name"] == "vtep1024"
    assert overlay["mesos_bridge"]["mtu"] == 1420
    assert c.ip4["a1"].startswith(overlay["subnet"].rsplit(".", 1)[0] + ".")


def test_a_route_deleted_by_hand_is_restored_within_a_second(cluster: Cluster) -> None:
    c = cluster
    a1 = c.agents[0]
    repairs = c.status(a1)["counters"]["repairs"]
    victim = next(r for r in routes(a1) if ":" not in r["dst"])
    start = time.monotonic()
    a1.run(["ip", "route", "del", victim["dst"], "proto", "44"])  # `ip` exits once it is gone
    took = wait_until(
        "the route back", lambda: victim["dst"] in {r["dst"] for r in routes(a1)}, timeout=5
    )
    took = time.monotonic() - start
    assert took < 1.0, f"restored after {took:.2f} s"
    neighbour = json.loads(a1.run(["ip", "-j", "neigh", "show", "dev", "vtep1024"]).stdout)[0]
    start = time.monotonic()
    a1.run(["ip", "neigh", "del", neighbour["dst"], "dev", "vtep1024"])
    wait_until(
        "the neighbour back",
        lambda: neighbour["dst"] in a1.run(["ip", "neigh", "show", "dev", "vtep1024"]).stdout,
        timeout=5,
    )
    took = time.monotonic() - start
    assert took < 1.0, f"neighbour restored after {took:.2f} s"
    # both were gone and repaired (the repair may beat the first look, hence the counter)
    assert c.status(a1)["counters"]["repairs"] >= repairs + 2


def test_restarting_an_agent_loses_no_packet(cluster: Cluster) -> None:
    c = cluster
    a3 = c.agents[2]
    argv = ["ping", "-c", "120", "-i", "0.05", "-W", "1"]
    pings = {
        target: subprocess.Popen(
            c.containers["a1"].command([*argv, c.ip4[target]]),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for target in ("a2", "a3")
    }
    for proc in pings.values():  # both pings are answered before the restart begins
        assert proc.stdout is not None
        while "bytes from" not in (line := proc.stdout.readline()):
            assert line, "ping ended before its first reply"
    c.lc.stop(a3)  # SIGTERM: a graceful stop, as systemctl restart does
    c.lc.start_agent(a3)
    wait_until("a3 converged again", lambda: c.converged(a3))
    for target, proc in pings.items():
        out, _ = proc.communicate(timeout=30)
        assert " 0% packet loss" in out, f"a1 -> {target}: {out}"
        assert proc.returncode == 0, f"a1 -> {target}: {out}"


def test_an_agent_restarted_apart_from_the_cluster_keeps_every_entry(cluster: Cluster) -> None:
    c = cluster
    a3 = c.agents[2]
    before = routes(a3)
    c.lc.stop(a3)
    c.lc.start_agent(a3, seed=c.ext)  # nobody gossips there: its store never syncs

    def on_saved_allocation() -> bool:
        try:
            return c.status(a3)["info"] is not None
        except LabError:  # its API is not up yet
            return False

    wait_until("a3 running on its saved allocation", on_saved_allocation)
    # Its first reconcile runs as soon as it has the allocation: for two seconds from then on,
    # no route may go missing (a deletion repaired at once would still show in a poll).
    window = time.monotonic() + 2.0
    while time.monotonic() < window:
        assert len(routes(a3)) == len(before) == 4
        time.sleep(0.05)
    status = c.status(a3)
    assert status["info"] is not None
    assert status["remotes"] == []
    assert len(routes(a3)) == len(before) == 4
    result = ping(c.containers["a1"], c.ip4["a3"], count=20, interval=0.05)
    assert " 0% packet loss" in result.stdout, result.stdout
    c.lc.stop(a3)
    c.lc.start_agent(a3)
    for host in c.agents:
        wait_until(f"{host.name} converged", lambda h=host: c.converged(h))  # type: ignore[misc]


def test_a_killed_agent_is_removed_within_the_grace_period_and_returns(cluster: Cluster) -> None:
    c = cluster
    a1, a2, a3 = c.agents
    c.lc.stop(a2, kill=True)
    started = time.monotonic()
    for host in (a1, a3):
        wait_until(
            f"a2's entries gone from {host.name}",
            lambda h=host: len(routes(h)) == 2 and f"dst {a2.address} " not in fdb(h),  # type: ignore[misc]
            timeout=GRACE + 20,
        )
    took = time.monotonic() - started
    print(f"a2's entries removed {took:.1f} s after its SIGKILL (grace {GRACE} s)")
    assert took < GRACE + 8  # failure detection (local timing) takes ~5 s of it
    assert ping(c.containers["a1"], c.ip4["a2"]).returncode != 0
    c.lc.start_agent(a2)
    for host in c.agents:
        wait_until(f"{host.name} converged", lambda h=host: c.converged(h), timeout=30)  # type: ignore[misc]
    result = ping(c.containers["a1"], c.ip4["a2"], count=3)
    assert result.returncode == 0, result.stdout + c.lc.logs()


def test_egress_nat_switched_off(cluster: Cluster) -> None:
    c = cluster
    a3 = c.agents[2]
    c.lc.stop(a3)
    c.lc.start_agent(a3, egress_nat=False)

    def nat_tables() -> list[str]:
        lines = a3.run(["nft", "list", "tables"]).stdout.splitlines()
        return [line for line in lines if line in ("table ip vxnet", "table ip6 vxnet")]

    wait_until("a3's NAT tables gone", lambda: nat_tables() == [])
    # ext has no route back to the overlay: without NAT its replies cannot arrive
    assert ping(c.containers["a3"], str(c.ext.address), count=2).returncode != 0
    assert ping(c.containers["a3"], c.ip4["a1"], count=2).returncode == 0
