"""The netlink layer against the real kernel, in lab namespaces: programming, owning, reaching."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from vxnet.overlay._diff import diff
from vxnet.overlay._model import KernelState, Op, RemoteAgent, Route, desired_state
from vxnet.overlay._netlink import Kernel
from vxnet.sandbox.lab import Lab

if TYPE_CHECKING:
    from vxnet.sandbox.lab import Host

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab_ready")]

DEV = "vtep1024"
VNI = 1024
PORT = 64000
MTU = 1420


def mac(n: int) -> str:
    return f"70:B3:D5:80:{n >> 8:02X}:{n & 255:02X}"  # upper case: the model lowers it


def remote(n: int) -> RemoteAgent:
    """Remote agent ``n``: underlay 198.19.0.n (only an FDB destination: no traffic goes there)."""
    return RemoteAgent(
        ip=f"198.19.0.{n}",
        vtep_ip=f"44.128.0.{n}",
        vtep_mac=mac(n),
        vtep_ip6=f"fd00:44::{n:x}",
        subnets=(f"9.0.{n}.0/24", f"fd09:0:{n:x}::/64"),
    )


def ensure_vtep(kernel: Kernel, host: Host, n: int = 1) -> None:
    kernel.ensure_vtep(
        DEV, VNI, PORT, str(host.address), mac(n), f"44.128.0.{n}/20", f"fd00:44::{n:x}/64", MTU
    )


def program(kernel: Kernel, desired: KernelState) -> None:
    result = kernel.apply(diff(desired, kernel.read(DEV)))
    assert result.errors == []
    assert kernel.read(DEV) == desired


def test_programs_five_remote_agents_then_changes_nothing() -> None:
    with Lab(1) as lab, lab.hosts[0].iproute() as ipr:
        host = lab.hosts[0]
        kernel = Kernel(ipr)
        ensure_vtep(kernel, host)
        created = kernel.writes
        assert created > 0
        assert kernel.read(DEV) == KernelState()

        desired = desired_state([remote(n) for n in range(2, 7)], DEV)
        assert desired.size() == 5 * (1 + 2 + 2)
        ops = diff(desired, kernel.read(DEV))
        result = kernel.apply(ops)
        assert result.errors == []
        assert result.writes == len(ops) == desired.size()
        assert kernel.read(DEV) == desired
        assert diff(desired, kernel.read(DEV)) == []

        # What iproute2 shows: the FDB entries, neighbours and onlink routes of protocol 44.
        fdb = host.run(["bridge", "fdb", "show", "dev", DEV]).stdout.splitlines()
        assert "70:b3:d5:80:00:02 dst 198.19.0.2 self permanent" in fdb
        assert sum("self permanent" in line and " dst 198.19." in line for line in fdb) == 5
        routes = host.run(["ip", "route", "show", "proto", "44"]).stdout.splitlines()
        assert "9.0.2.0/24 via 44.128.0.2 dev vtep1024 onlink " in routes
        routes6 = host.run(["ip", "-6", "route", "show", "proto", "44"]).stdout
        assert "fd09:0:2::/64 via fd00:44::2 dev vtep1024 metric 1024 onlink" in routes6
        neigh6 = host.run(["ip", "-6", "neigh", "show", "dev", DEV]).stdout
        assert "fd00:44::2 lladdr 70:b3:d5:80:00:02 PERMANENT" in neigh6

        # Steady state: no write for the objects, nor for the devices.
        writes = kernel.writes
        assert kernel.apply(diff(desired, kernel.read(DEV))).writes == 0
        ensure_vtep(kernel, host)
        assert kernel.writes == writes
        kernel.ensure_bridge("m-test", "9.0.1.1/25", "fd09:0:1::1/64", MTU)
        assert kernel.writes - writes == 4  # add, 2 addresses, up
        kernel.ensure_bridge("m-test", "9.0.1.1/25", "fd09:0:1::1/64", MTU)
        assert kernel.writes - writes == 4
        assert kernel.recreated == 0

        # One remote gone, one changed its VTEP MAC: replaces and deletes, nothing else.
        changed = RemoteAgent("198.19.0.5", "44.128.0.5", mac(55), "fd00:44::5", ())
        desired = desired_state([remote(2), remote(3), remote(4), changed], DEV)
        ops = diff(desired, kernel.read(DEV))
        assert {op.action for op in ops} == {"replace", "delete"}
        program(kernel, desired)


def test_devices_are_fixed_in_place_or_recreated() -> None:
    with Lab(1) as lab, lab.hosts[0].iproute() as ipr:
        host = lab.hosts[0]
        kernel = Kernel(ipr)
        ensure_vtep(kernel, host)
        program(kernel, desired_state([remote(2)], DEV))
        assert kernel.recreated == 0

        # Another MTU, MAC and address: fixed in place, not recreated.
        writes = kernel.writes
        kernel.ensure_vtep(DEV, VNI, PORT, str(host.address), mac(9), "44.128.0.9/16", None, 1400)
        assert kernel.recreated == 0
        assert kernel.writes - writes == 1 + 3  # link set; 2 addresses deleted, 1 added
        link = host.run(["ip", "-d", "link", "show", DEV]).stdout
        assert "mtu 1400" in link
        assert "link/ether 70:b3:d5:80:00:09" in link
        assert "vxlan id 1024" in link
        assert "dstport 64000" in link
        assert "nolearning" in link
        addrs = host.run(["ip", "-o", "addr", "show", "dev", DEV]).stdout
        assert "44.128.0.9/16" in addrs
        assert "44.128.0.1/20" not in addrs
        assert "fd00:44::1" not in addrs
        assert "fe80::" in addrs  # link-local addresses are the kernel's, left alone
        # The kernel flushed the neighbours (new MAC) and the IPv6 route (its gateway's subnet
        # left with the IPv6 address); the IPv4 route stayed, as the device always had an IPv4
        # address. Reading shows it, and a reconcile puts the rest back.
        actual = kernel.read(DEV)
        assert Route("9.0.2.0/24", "44.128.0.2", DEV) in actual.routes
        assert actual.neighbours == frozenset()
        program(kernel, desired_state([remote(2)], DEV))

        # Learning switched on by hand is switched off again, in place.
        host.run(["ip", "link", "set", DEV, "type", "vxlan", "learning"])
        kernel.ensure_vtep(DEV, VNI, PORT, str(host.address), mac(9), "44.128.0.9/16", None, 1400)
        assert kernel.recreated == 0
        assert "nolearning" in host.run(["ip", "-d", "link", "show", DEV]).stdout

        # Another UDP port cannot be changed in place: the device is recreated, empty.
        kernel.ensure_vtep(DEV, VNI, 4789, str(host.address), mac(9), "44.128.0.9/16", None, 1400)
        assert kernel.recreated == 1
        assert "dstport 4789" in host.run(["ip", "-d", "link", "show", DEV]).stdout
        assert kernel.read(DEV) == KernelState()
        writes = kernel.writes
        kernel.ensure_vtep(DEV, VNI, 4789, str(host.address), mac(9), "44.128.0.9/16", None, 1400)
        assert kernel.writes == writes

        # A device of the bridge's name that is not a bridge is replaced by one.
        host.run(["ip", "link", "add", "m-x", "type", "veth", "peer", "name", "m-xpeer"])
        kernel.ensure_bridge("m-x", "9.0.1.1/25", None, 1500)
        assert kernel.recreated == 2
        link = host.run(["ip", "-d", "link", "show", "m-x"]).stdout
        assert "bridge" in link
        assert "UP" in link.partition("<")[2].partition(">")[0].split(",")
        assert "9.0.1.1/25" in host.run(["ip", "-o", "addr", "show", "dev", "m-x"]).stdout


def test_hand_made_changes_are_seen_and_foreign_objects_left_alone() -> None:
    with Lab(1) as lab, lab.hosts[0].iproute() as ipr:
        host = lab.hosts[0]
        kernel = Kernel(ipr)
        ensure_vtep(kernel, host)
        desired = desired_state([remote(n) for n in range(2, 5)], DEV)
        program(kernel, desired)

        # A route deleted by hand is missing from what is read, and put back.
        host.run(["ip", "route", "del", "9.0.3.0/24", "dev", DEV])
        actual = kernel.read(DEV)
        assert desired.routes - actual.routes == {Route("9.0.3.0/24", "44.128.0.3", DEV)}
        assert actual.routes < desired.routes
        assert [op.action for op in diff(desired, actual)] == ["replace"]
        program(kernel, desired)

        # Foreign objects: routes of other protocols on the VTEP, a dynamic FDB entry.
        host.run(["ip", "route", "add", "10.99.0.0/24", "via", "44.128.0.9", "dev", DEV, "onlink"])
        host.run(["ip", "-6", "route", "add", "fd99::/64", "via", "fd00:44::9", "dev", DEV,
                  "onlink", "proto", "static"])  # fmt: skip
        host.run(["bridge", "fdb", "add", "02:00:00:00:00:99", "dev", DEV, "dst", "198.19.0.99",
                  "dynamic"])  # fmt: skip
        assert kernel.read(DEV) == desired
        result = kernel.apply(diff(KernelState(), kernel.read(DEV)))  # delete everything owned
        assert result.errors == []
        assert result.writes == desired.size()
        assert kernel.read(DEV) == KernelState()
        assert "10.99.0.0/24 via 44.128.0.9" in host.run(["ip", "route"]).stdout
        assert "fd99::/64 via fd00:44::9" in host.run(["ip", "-6", "route"]).stdout
        assert "02:00:00:00:00:99" in host.run(["bridge", "fdb", "show", "dev", DEV]).stdout
        assert host.run(["ip", "route", "show", "proto", "44"]).stdout == ""

        # A refused op is reported with its error and the others go on; deleting what is
        # already gone is not an error.
        bad = Op("replace", Route("9.0.7.1/24", "44.128.0.7", DEV))  # host bits set: EINVAL
        good = Op("replace", Route("9.0.8.0/24", "44.128.0.8", DEV))
        gone = Op("delete", Route("9.0.9.0/24", "44.128.0.9", DEV))
        missing = Op("replace", Route("9.0.10.0/24", "44.128.0.10", "vtep77"))
        result = kernel.apply([bad, good, gone, missing])
        assert result.writes == 3
        assert len(result.errors) == 2
        assert result.errors[0].startswith("replace Route(dst='9.0.7.1/24'")
        assert "errno 22" in result.errors[0]
        assert "no device 'vtep77'" in result.errors[1]
        assert kernel.read(DEV).routes == {good.obj}


def test_read_agrees_with_iproute2_over_many_datagrams() -> None:
    """600 agents: each dump spans several netlink datagrams, with notifications interleaved."""
    with Lab(1) as lab, lab.hosts[0].iproute() as ipr:
        host = lab.hosts[0]
        kernel = Kernel(ipr)
        ensure_vtep(kernel, host)
        remotes = [
            RemoteAgent(
                ip=f"198.19.{n >> 8}.{n & 255}",
                vtep_ip=f"44.128.{n >> 8}.{n & 255}",
                vtep_mac=mac(n),
                vtep_ip6=f"fd00:44::{n:x}",
                subnets=(f"9.{n >> 8}.{n & 255}.0/24", f"fd09:{n:x}::/64"),
            )
            for n in range(2, 602)
        ]
        desired = desired_state(remotes, DEV)
        program(kernel, desired)

        def listed(argv: list[str]) -> list[dict[str, object]]:
            return list(json.loads(host.run(argv).stdout))

        routes = listed(["ip", "-j", "route", "show", "proto", "44"])
        routes6 = listed(["ip", "-j", "-6", "route", "show", "proto", "44"])
        neigh = listed(["ip", "-j", "neigh", "show", "dev", DEV, "nud", "permanent"])
        fdb = listed(["bridge", "-j", "fdb", "show", "dev", DEV])
        assert {Route(str(r["dst"]), str(r["gateway"]), DEV) for r in routes + routes6} == (
            desired.routes
        )
        assert {(str(n["dst"]), str(n["lladdr"])) for n in neigh} == {
            (n.ip, n.mac) for n in desired.neighbours
        }
        assert {(str(f["mac"]), str(f["dst"])) for f in fdb if "dst" in f} == {
            (f.mac, f.dst) for f in desired.fdb
        }
        assert diff(desired, kernel.read(DEV)) == []


def build_agent(kernel: Kernel, host: Host, n: int) -> RemoteAgent:
    """Host ``n`` gets a VTEP and a bridge m-test holding 9.0.n.1/25; returns it as a remote."""
    ensure_vtep(kernel, host, n)
    kernel.ensure_bridge("m-test", f"9.0.{n}.1/25", f"fd09:0:{n}::1/64", MTU)
    return RemoteAgent(
        ip=str(host.address),
        vtep_ip=f"44.128.0.{n}",
        vtep_mac=mac(n),
        vtep_ip6=f"fd00:44::{n}",
        subnets=(f"9.0.{n}.0/25", f"fd09:0:{n}::/64"),
    )


def test_two_hosts_reach_each_other_across_the_vxlan() -> None:
    with Lab(2) as lab:
        a, b = lab.hosts
        with a.iproute() as ipr_a, b.iproute() as ipr_b:
            ka, kb = Kernel(ipr_a), Kernel(ipr_b)
            agent_a, agent_b = build_agent(ka, a, 1), build_agent(kb, b, 2)
            program(ka, desired_state([agent_b], DEV))
            program(kb, desired_state([agent_a], DEV))
        a.run(["ping", "-c", "1", "-W", "2", "-I", "9.0.1.1", "9.0.2.1"])
        b.run(["ping", "-c", "1", "-W", "2", "-I", "9.0.2.1", "9.0.1.1"])
        a.run(["ping", "-6", "-c", "1", "-W", "2", "-I", "fd09:0:1::1", "fd09:0:2::1"])
        # The packets went over the VTEPs: the VxLAN device counted them.
        link = json.loads(a.run(["ip", "-j", "-s", "link", "show", DEV]).stdout)[0]
        assert link["stats64"]["tx"]["packets"] >= 2
        assert link["stats64"]["rx"]["packets"] >= 2
