"""The agent's local pieces that need no kernel: CNI files, the NAT ruleset, netlink events,
the status comparison, and the CNI runner's error handling."""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from vxnet.overlay._cni import Nameservers, conflist, conflists, remove_stale, write_conflist
from vxnet.overlay._diff import compare
from vxnet.overlay._local import LocalSettings, desired_local
from vxnet.overlay._local_model import DNS_DEVICE, Device, is_owned_device
from vxnet.overlay._model import Fdb, KernelState, Neighbour, Route
from vxnet.overlay._nat import nat_ruleset
from vxnet.overlay._netlink import owned_changes
from vxnet.records import AgentInfo, AgentOverlay
from vxnet.sandbox.cni import CniError, find_plugin_dir, run_conflist

if TYPE_CHECKING:
    from pathlib import Path

OVERLAY: dict[str, Any] = {
    "info": {"name": "dcos", "subnet": "9.0.0.0/8", "prefix": 24},
    "subnet": "9.0.3.0/24",
    "subnet6": "fd01:b:0:0:3::/80",
    "mesos_bridge": {
        "name": "m-dcos",
        "mtu": 1400,
        "ip": "9.0.3.1/25",
        "ip6": "fd01:b::3:0:0:1/81",
    },
    "docker_bridge": {"name": "d-dcos", "mtu": 1400, "ip": "9.0.3.129/25"},
    "backend": {
        "vxlan": {"vni": 1024, "vtep_ip": "44.128.0.4/20", "vtep_mac": "70:b3:d5:80:00:04"}
    },
    "state": {"status": "STATUS_OK"},
}


# --- CNI configuration --------------------------------------------------------------------------


def test_conflist_runs_the_bridge_plugin_with_vxnet_ipam() -> None:
    data = conflist(AgentOverlay.from_json(OVERLAY), "/var/lib/vxnet/agent/ipam.sock", 1420)
    assert data == {
        "cniVersion": "1.0.0",
        "name": "dcos",
        "vxnet": True,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "m-dcos",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "mtu": 1400,
                "ipam": {"type": "vxnet-ipam", "socket": "/var/lib/vxnet/agent/ipam.sock"},
            }
        ],
    }


def test_conflist_names_the_agents_dns_where_the_bridge_plugin_passes_it_on() -> None:
    dns = Nameservers(
        ("198.51.100.1", "fd01:d::1"), ("marathon.containerip.dcos.thisdcos.directory",)
    )
    data = conflist(AgentOverlay.from_json(OVERLAY), "/d", 1420, dns)
    assert data is not None
    # in the bridge plugin's own configuration: Debian's bridge 1.1.1 replaces the IPAM
    # result's dns with it
    assert data["plugins"][0]["dns"] == {
        "nameservers": ["198.51.100.1", "fd01:d::1"],
        "search": ["marathon.containerip.dcos.thisdcos.directory"],
    }
    assert Nameservers(("198.51.100.1",)).cni() == {"nameservers": ["198.51.100.1"]}
    none = conflist(AgentOverlay.from_json(OVERLAY), "/d", 1420, Nameservers((), ("x.y",)))
    assert none is not None
    assert "dns" not in none["plugins"][0]


def test_the_dns_device_holds_the_container_addresses() -> None:
    info = AgentInfo.from_json({"ip": "198.18.0.1", "overlays": [OVERLAY]})
    settings = LocalSettings("198.18.0.1", "/etc/cni/net.d", "/d", egress_nat=True)
    plain = desired_local(info, settings)
    assert plain is not None
    assert DNS_DEVICE not in plain.devices
    dns = replace(settings, dns_addresses=("198.51.100.1", "fd01:d::1"), dns_search=("a.b",))
    state = desired_local(info, dns)
    assert state is not None
    device = state.devices[DNS_DEVICE]
    assert (device.kind, device.addresses) == (
        "bridge",
        frozenset({"198.51.100.1/32", "fd01:d::1/128"}),
    )
    (conf,) = (f for f in state.files.values() if f.path.endswith("dcos.conflist"))
    assert json.loads(conf.text)["plugins"][0]["dns"]["nameservers"] == [
        "198.51.100.1",
        "fd01:d::1",
    ]
    # vxnet's own: removed once no address is configured; a user's bridge of that prefix is not
    assert is_owned_device(device)
    assert not is_owned_device(Device("vxnet-dns2", "bridge", 1500))


def test_no_conflist_for_a_failed_network_or_one_without_a_cni_bridge() -> None:
    failed = {"info": {"name": "x"}, "state": {"status": "STATUS_FAILED", "error": "full"}}
    assert conflist(AgentOverlay.from_json(failed), "/d", 1420) is None
    no_bridge = {k: v for k, v in OVERLAY.items() if k != "mesos_bridge"}
    assert conflist(AgentOverlay.from_json(no_bridge), "/d", 1420) is None
    info = {"ip": "198.18.0.1", "overlays": [OVERLAY, failed, no_bridge]}
    assert list(conflists(AgentInfo.from_json(info), "/d", 1420)) == ["dcos.conflist"]


def test_the_bridge_mtu_defaults_to_the_given_one() -> None:
    bridge = {k: v for k, v in OVERLAY["mesos_bridge"].items() if k != "mtu"}
    data = conflist(AgentOverlay.from_json({**OVERLAY, "mesos_bridge": bridge}), "/d", 1420)
    assert data is not None
    assert data["plugins"][0]["mtu"] == 1420


def test_write_conflist_writes_only_changes_and_remove_stale_only_its_own(tmp_path: Path) -> None:
    directory = tmp_path / "net.d"
    data = conflist(AgentOverlay.from_json(OVERLAY), "/d", 1420)
    assert data is not None
    assert write_conflist(directory, "dcos.conflist", data) is True
    assert json.loads((directory / "dcos.conflist").read_text()) == data
    assert write_conflist(directory, "dcos.conflist", data) is False
    assert write_conflist(directory, "dcos.conflist", {**data, "name": "other"}) is True
    assert [p.name for p in directory.iterdir()] == ["dcos.conflist"]  # no temporary left
    (directory / "old.conflist").write_text(json.dumps({**data, "name": "old"}))
    (directory / "theirs.conflist").write_text(json.dumps({"name": "theirs", "plugins": []}))
    (directory / "broken.conflist").write_text("{not json")
    assert remove_stale(directory, {"dcos.conflist"}) == ["old.conflist"]
    assert sorted(p.name for p in directory.iterdir()) == [
        "broken.conflist",
        "dcos.conflist",
        "theirs.conflist",
    ]


# --- egress NAT ---------------------------------------------------------------------------------


def test_nat_ruleset_masquerades_what_leaves_the_overlay_but_not_through_the_vtep() -> None:
    text = nat_ruleset(["9.0.0.0/8", "10.0.0.0/16"], [], "vtep1024")
    lines = text.splitlines()
    assert lines[:3] == ["table ip vxnet", "delete table ip vxnet", "table ip vxnet {"]
    rule = "ip saddr { 9.0.0.0/8, 10.0.0.0/16 } ip daddr != { 9.0.0.0/8, 10.0.0.0/16 }"
    assert f'    {rule} oifname != "vtep1024" masquerade' in lines
    assert "type nat hook postrouting priority srcnat; policy accept;" in text
    # no IPv6 subnet: its table is removed, none created
    assert lines[-2:] == ["table ip6 vxnet", "delete table ip6 vxnet"]


def test_nat_ruleset_without_subnets_removes_both_tables() -> None:
    assert nat_ruleset([], [], "vtep1024").splitlines() == [
        "table ip vxnet",
        "delete table ip vxnet",
        "table ip6 vxnet",
        "delete table ip6 vxnet",
    ]


# --- netlink events -----------------------------------------------------------------------------

NLMSG = struct.Struct("=IHHII")


def message(kind: int, body: bytes) -> bytes:
    body += bytes(8)  # an attribute's worth, as real notifications carry
    return NLMSG.pack(NLMSG.size + len(body), kind, 0, 0, 0) + body


def delroute(protocol: int) -> bytes:
    return message(25, struct.pack("=BBBBBBBBI", socket.AF_INET, 24, 0, 0, 254, protocol, 0, 1, 0))


def delneigh(ifindex: int, family: int = socket.AF_INET) -> bytes:
    return message(29, struct.pack("=B3xiHBB", family, ifindex, 0x80, 0, 0))


def link(kind: int, ifindex: int) -> bytes:
    return message(kind, struct.pack("=BxHiII", 0, 0, ifindex, 0, 0))


def test_owned_changes_sees_only_deletions_of_owned_objects() -> None:
    assert owned_changes(delroute(44), 7, [7, 8]) == {"route"}
    assert owned_changes(delroute(4), 7, [7, 8]) == set()  # static route: not ours
    assert owned_changes(delneigh(7), 7, [7]) == {"neighbour"}
    assert owned_changes(delneigh(7, family=7), 7, [7]) == {"neighbour"}  # FDB (AF_BRIDGE)
    assert owned_changes(delneigh(9), 7, [7]) == set()  # another device
    assert owned_changes(delneigh(7), None, []) == set()  # no VTEP yet
    assert owned_changes(link(17, 8), 7, [7, 8]) == {"link"}
    assert owned_changes(link(16, 8), 7, [7, 8]) == {"link"}
    assert owned_changes(link(17, 3), 7, [7, 8]) == set()
    # several in one datagram; a new route (24) is not reported
    batch = message(24, bytes(12)) + delroute(44) + delneigh(7) + link(17, 8)
    assert owned_changes(batch, 7, [7, 8]) == {"route", "neighbour", "link"}


def test_owned_changes_survives_short_and_truncated_data() -> None:
    assert owned_changes(b"", 7, [7]) == set()
    assert owned_changes(delroute(44)[:20], 7, [7]) == set()
    assert owned_changes(NLMSG.pack(3, 25, 0, 0, 0), 7, [7]) == set()  # length below the header
    assert owned_changes(message(25, b"\x02"), 7, [7]) == set()  # too short to be a route


# --- the status comparison ----------------------------------------------------------------------


def test_compare_tells_ok_missing_different_and_extra() -> None:
    dev = "vtep1024"
    desired = KernelState(
        frozenset({Route("9.0.1.0/24", "44.128.0.1", dev), Route("9.0.2.0/24", "44.128.0.2", dev)}),
        frozenset({Neighbour("44.128.0.1", "70:b3:d5:80:00:01", dev)}),
        frozenset({Fdb("70:b3:d5:80:00:01", "198.18.0.1", dev)}),
    )
    actual = KernelState(
        frozenset({Route("9.0.1.0/24", "44.128.0.1", dev), Route("9.0.9.0/24", "44.128.0.9", dev)}),
        frozenset({Neighbour("44.128.0.1", "70:b3:d5:80:00:99", dev)}),
        frozenset({Fdb("70:b3:d5:80:00:01", "198.18.0.1", dev)}),
    )
    assert compare(desired, actual) == [
        {"kind": "route", "object": "9.0.1.0/24 via 44.128.0.1 dev vtep1024 onlink", "state": "ok"},
        {
            "kind": "route",
            "object": "9.0.2.0/24 via 44.128.0.2 dev vtep1024 onlink",
            "state": "missing",
        },
        {
            "kind": "route",
            "object": "9.0.9.0/24 via 44.128.0.9 dev vtep1024 onlink",
            "state": "extra",
        },
        {
            "kind": "neighbour",
            "object": "44.128.0.1 lladdr 70:b3:d5:80:00:01 dev vtep1024 permanent",
            "state": "different",
        },
        {
            "kind": "fdb",
            "object": "70:b3:d5:80:00:01 dst 198.18.0.1 dev vtep1024 self permanent",
            "state": "ok",
        },
    ]
    assert all(e["state"] == "ok" for e in compare(desired, desired))


# --- the CNI runner -----------------------------------------------------------------------------


def test_run_conflist_reports_a_missing_plugin_directory() -> None:
    with pytest.raises(CniError, match="install the package containernetworking-plugins"):
        find_plugin_dir(["/nonexistent/cni"])


def test_run_conflist_passes_the_plugins_error(tmp_path: Path) -> None:
    plugin = tmp_path / "bridge"
    plugin.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        'echo \'{"cniVersion": "1.0.0", "code": 11, "msg": "try again later", '
        '"details": "dcos: 126 of 126 in use"}\'\nexit 1\n'
    )
    plugin.chmod(0o755)
    data = {"cniVersion": "1.0.0", "name": "dcos", "plugins": [{"type": "bridge"}]}
    with pytest.raises(CniError) as caught:
        run_conflist(data, "ADD", "c1", "/run/netns/x", plugin_dirs=[str(tmp_path)])
    assert caught.value.code == 11
    assert str(caught.value) == (
        "CNI plugin bridge: error 11: try again later (dcos: 126 of 126 in use)"
    )
    with pytest.raises(ValueError, match="ADD, DEL or CHECK"):
        run_conflist(data, "UP", "c1", "/run/netns/x", plugin_dirs=[str(tmp_path)])
