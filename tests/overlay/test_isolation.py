"""Isolation between virtual networks: the ruleset vxnet renders (sans-IO), then the same ruleset
loaded with nft into a lab host that routes between two networks' bridges (containers attached
by the real CNI bridge plugin) and an outside host, and traffic tried every way."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

import pytest

from vxnet.config import Allow, NetworkConfig, Overlay
from vxnet.overlay._isolation import (
    Allowed,
    NetworkSpace,
    Policy,
    isolation_ruleset,
    refused_counter,
)
from vxnet.sandbox.cluster import LabCluster
from vxnet.sandbox.cni import find_plugin_dir, run_conflist
from vxnet.sandbox.lab import Lab
from waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from vxnet.sandbox.cluster import Attachment
    from vxnet.sandbox.lab import Container, Host

DEV = NetworkSpace("dev", ("10.1.0.0/16", "fd02:1::/64"))
PROD = NetworkSpace("prod", ("10.2.0.0/16", "fd02:2::/64"), allow_hosts=("198.18.0.0/15",))
POLICY = Policy(True, (DEV, PROD), (Allowed("dev", "prod", ("tcp/5432",)),))


# --- the ruleset --------------------------------------------------------------------------------


def test_off_or_without_networks_the_table_is_only_removed() -> None:
    removed = "table inet vxnet-isolation\ndelete table inet vxnet-isolation\n"
    assert isolation_ruleset(Policy(False, (DEV, PROD))) == removed
    assert isolation_ruleset(Policy(True, (NetworkSpace("x", ()),))) == removed


def test_rules_grow_with_networks_and_pairs_not_with_anything_else() -> None:
    def size(networks: int, pairs: int) -> int:
        nets = tuple(NetworkSpace(f"n{i}", (f"10.{i}.0.0/16",)) for i in range(networks))
        allow = tuple(Allowed(f"n{i}", f"n{i + 1}", ("tcp/80",)) for i in range(pairs))
        return len(isolation_ruleset(Policy(True, nets, allow)).splitlines())

    # each extra network adds its chain and its refuse chains; each pair one rule
    assert size(4, 1) - size(4, 0) == 1
    assert size(4, 3) - size(4, 0) == 3
    text = isolation_ruleset(POLICY)
    assert "ip saddr 10.1.0.0/16 meta l4proto tcp th dport 5432 return" in text
    assert "ip6 saddr fd02:1::/64 meta l4proto tcp th dport 5432 return" in text
    assert "ip saddr 198.18.0.0/15 return" in text  # prod's allow_hosts
    assert "ct state established,related accept" in text
    assert "priority filter - 10" in text


# --- in the kernel ------------------------------------------------------------------------------


def attach(host: Host, container: Container, bridge: str, subnet: str, tmp: Path) -> str:
    conflist = {
        "cniVersion": "1.0.0",
        "name": bridge,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(tmp / "ipam"),
                },
            }
        ],
    }
    result = run_conflist(
        conflist,
        "ADD",
        container.netns,
        container.netns_path,
        plugin_dirs=[find_plugin_dir()],
        wrap=host.command,
    )
    return str(result["ips"][0]["address"]).split("/")[0]


CONNECT = (
    "import socket, sys, time\n"
    "start = time.monotonic()\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
    "    print('open', time.monotonic() - start)\n"
    "except ConnectionRefusedError:\n"
    "    print('refused', time.monotonic() - start)\n"
    "except OSError as exc:\n"
    "    print(type(exc).__name__ + ':' + str(exc.errno), time.monotonic() - start)\n"
)
LISTEN = (
    "import socket, sys\n"
    "servers = []\n"
    "for port in sys.argv[1:]:\n"
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    s.bind(('0.0.0.0', int(port))); s.listen(16); servers.append(s)\n"
    "import select\n"
    "while True:\n"
    "    for s in select.select(servers, [], [])[0]:\n"
    "        s.accept()[0].close()\n"
)


def connect(ns: Host | Container, ip: str, port: int) -> tuple[str, float]:
    said = ns.run([sys.executable, "-c", CONNECT, ip, str(port)], timeout=20).stdout.split()
    return said[0], float(said[1])


def counters(host: Host) -> dict[str, int]:
    out = host.run(["nft", "-j", "list", "counters", "table", "inet", "vxnet-isolation"]).stdout
    found = {}
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            found[item["counter"]["name"]] = int(item["counter"]["packets"])
    return found


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables")
def test_networks_are_walled_gardens_with_directional_allowed_pairs(tmp_path: Path) -> None:
    with Lab(["a1", "out"]) as lab:
        a1, out = lab.host("a1"), lab.host("out")
        a1.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        dev = lab.container(a1, "dev")
        prod = lab.container(a1, "prod")
        prod2 = lab.container(a1, "prodtwo")
        dev_ip = attach(a1, dev, "m-dev", "10.1.0.0/24", tmp_path)
        prod_ip = attach(a1, prod, "m-prod", "10.2.0.0/24", tmp_path)
        prod2_ip = attach(a1, prod2, "m-prod", "10.2.0.0/24", tmp_path)
        out.run(["ip", "route", "add", "10.0.0.0/8", "via", str(a1.address)])
        for c in (dev, prod, prod2):
            c.spawn([sys.executable, "-c", LISTEN, "80", "5432"])
        a1.run(["nft", "-f", "-"], input=isolation_ruleset(POLICY))

        for ip in (dev_ip, prod_ip, prod2_ip):  # the agent's own connections are not filtered
            deadline = time.monotonic() + 10
            while connect(a1, ip, 80)[0] != "open":
                assert time.monotonic() < deadline, f"nothing listens on {ip}"
        # a network reaches itself, also on the same bridge
        assert connect(prod2, prod_ip, 5432)[0] == "open"
        # dev -> prod: only the allowed port; the rest refused at once (a reset, not a timeout)
        assert connect(dev, prod_ip, 5432)[0] == "open"
        verdict, took = connect(dev, prod_ip, 80)
        assert (verdict, took < 1.0) == ("refused", True), took
        # the allowed direction only: prod -> dev is refused
        verdict, took = connect(prod, dev_ip, 80)
        assert (verdict, took < 1.0) == ("refused", True), took
        # pings are refused by ICMP administratively prohibited, not left to time out
        ping = dev.run(["ping", "-c", "1", "-W", "3", prod_ip], check=False)
        assert ping.returncode != 0
        assert "prohibited" in ping.stdout.lower() or "filtered" in ping.stdout.lower(), ping.stdout
        # hosts: prod lets the underlay in (allow_hosts), dev does not
        assert connect(out, prod_ip, 80)[0] == "open"
        verdict, took = connect(out, dev_ip, 80)
        assert (verdict, took < 1.0) == ("refused", True), took
        # the agent itself reaches every container (its health checks)
        assert connect(a1, dev_ip, 80)[0] == "open"
        assert connect(a1, prod_ip, 80)[0] == "open"
        # counted per pair
        got = counters(a1)
        assert got[refused_counter("dev", "prod")] >= 2  # the connection and the ping
        assert got[refused_counter("prod", "dev")] >= 1
        assert got[refused_counter("hosts", "dev")] >= 1
        assert got[refused_counter("hosts", "prod")] == 0
        # isolation off: the table goes, everything is open
        a1.run(["nft", "-f", "-"], input=isolation_ruleset(Policy(False, (DEV, PROD))))
        assert connect(prod, dev_ip, 80)[0] == "open"
        assert "vxnet-isolation" not in a1.run(["nft", "list", "tables"]).stdout


# --- real agents, the policy from the masters --------------------------------------------------

NETWORKS = NetworkConfig(
    overlays=(
        Overlay("dev", IPv4Network("10.1.0.0/16"), 24),
        Overlay("prod", IPv4Network("10.2.0.0/16"), 24),
    ),
    isolation=True,
    allow=(Allow("dev", "prod", ("tcp/5432",)),),
)


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables")
def test_agents_apply_the_masters_policy_and_a_change_within_a_second(tmp_path: Path) -> None:
    with Lab(["master", "a1", "a2"]) as lab:
        a1, a2 = lab.host("a1"), lab.host("a2")
        lc = LabCluster(lab, tmp_path, lab.host("master"), [a1, a2], network=NETWORKS)
        lc.start()
        try:
            lc.wait_converged()
            dev = lc.attach(a1, "dev", network="dev")
            prod = lc.attach(a2, "prod", network="prod")
            assert dev.ip is not None
            assert prod.ip is not None
            for c in (dev, prod):
                c.container.spawn([sys.executable, "-c", LISTEN, "80", "5432"])
            for host, c in ((a1, dev), (a2, prod)):  # each agent reaches its own containers
                deadline = time.monotonic() + 10
                while connect(host, str(c.ip), 80)[0] != "open":
                    assert time.monotonic() < deadline, f"nothing listens on {c.ip}"

            def verdict(src: Attachment, dst: Attachment, port: int) -> str:
                return connect(src.container, str(dst.ip), port)[0]

            # the policy reaches both agents from the masters (no agent setting says it)
            wait_until("isolation on a1", lambda: verdict(prod, dev, 80) == "refused", 10)
            assert verdict(dev, prod, 5432) == "open"  # across the overlay, the allowed port
            assert verdict(dev, prod, 80) == "refused"
            shown = lc.status(a1)["isolation"]
            assert shown["on"] is True
            assert shown["programmed"] is True
            assert shown["allow"] == [{"from": "dev", "to": "prod", "ports": ["tcp/5432"]}]
            text = a1.run([sys.executable, "-m", "vxnet", "overlay", "status"]).stdout
            assert "isolation: on (policy " in text
            assert "ok; allowed: dev -> prod (tcp/5432)" in text
            # a change of policy at the masters: in force on the agents within a second
            started = time.monotonic()
            lc.change_network(replace(NETWORKS, isolation=False))
            took = wait_until(
                "prod to reach dev", lambda: verdict(prod, dev, 80) == "open", 10, poll=0.02
            )
            print(f"isolation off on the agents {took:.2f} s after the masters' SIGHUP")
            assert took < 1.5
            assert time.monotonic() - started < 10
            assert "vxnet-isolation" not in a1.run(["nft", "list", "tables"]).stdout
            assert lc.status(a2)["isolation"]["on"] is False
        except BaseException:
            print(lc.logs())
            raise
