"""The agent's lease book (sans-IO apart from its file) and the vxnet-ipam plugin's own logic."""

from __future__ import annotations

import json
import os
import socket
import threading
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_interface
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vxnet import ipam_plugin
from vxnet.overlay._ipam import (
    REBIND,
    AddressBook,
    Half,
    IpamError,
    halves_from_info,
    parse_cni_args,
    task_identity,
)
from vxnet.records import AgentInfo

if TYPE_CHECKING:
    from pathlib import Path

HALF = Half(
    "dcos",
    IPv4Network("9.0.1.0/29"),
    "9.0.1.1",
    IPv6Network("fd01:b::1:0:0:0/125"),
    "fd01:b::1:0:0:1",
)
SMALL = {"dcos": HALF}  # 5 IPv4 addresses (.2 to .6), 6 IPv6 ones


def book(tmp_path: Path) -> AddressBook:
    b = AddressBook(tmp_path / "ipam.json")
    b.set_halves(SMALL)
    return b


def test_add_gives_both_families_with_the_task_and_is_idempotent(tmp_path: Path) -> None:
    b = book(tmp_path)
    lease = b.add("dcos", "c1", "eth0", {"name": "web"}, 1.0)
    assert lease.ip == "9.0.1.2/29"
    assert lease.ip6 == "fd01:b::1:0:0:2/125"
    assert lease.task == {"name": "web"}
    assert b.add("dcos", "c1", "eth0", {"name": "other"}, 2.0) == lease
    assert b.add("dcos", "c1", "eth1", {}, 3.0).ip == "9.0.1.3/29"


def test_exhaustion_is_try_again_later_with_the_counts(tmp_path: Path) -> None:
    b = book(tmp_path)
    for i in range(5):
        b.add("dcos", f"c{i}", "eth0", {}, 0.0)
    with pytest.raises(IpamError) as caught:
        b.add("dcos", "c9", "eth0", {}, 0.0)
    assert caught.value.code == 11
    assert caught.value.msg == "dcos: no free address in this agent's range 9.0.1.0/29"
    assert caught.value.details == "5 of 5 in use"
    assert b.usage("dcos") == {
        "total": 5,
        "allocated": 5,
        "free": 0,
        "total6": 6,
        "allocated6": 5,
        "free6": 1,
    }
    assert [lease.container_id for lease in b.leases()] == [f"c{i}" for i in range(5)]


def test_del_is_idempotent_and_an_address_is_not_reused_at_once(tmp_path: Path) -> None:
    b = book(tmp_path)
    first = b.add("dcos", "c1", "eth0", {}, 0.0)
    b.add("dcos", "c2", "eth0", {}, 0.0)
    assert b.delete("dcos", "c1", "eth0") == first
    assert b.delete("dcos", "c1", "eth0") is None
    assert b.delete("nope", "c1", "eth0") is None
    assert b.add("dcos", "c3", "eth0", {}, 0.0).ip == "9.0.1.4/29"  # round-robin, not .2


def test_a_deleted_attachment_added_again_soon_gets_its_addresses_back(tmp_path: Path) -> None:
    b = book(tmp_path)
    b.add("dcos", "c0", "eth0", {}, 0.0)
    first = b.add("dcos", "c1", "eth0", {}, 0.0)
    # podman network reload: DEL, then ADD of the same container (its old MAC, no address)
    b.delete("dcos", "c1", "eth0", 100.0)
    again = b.add("dcos", "c1", "eth0", {}, 101.0)
    assert (again.ip, again.ip6) == (first.ip, first.ip6)
    # only for that attachment, only soon after, and only while the address is free
    b.delete("dcos", "c1", "eth0", 200.0)
    assert b.add("dcos", "c1", "eth1", {}, 201.0).ip != first.ip
    b.delete("dcos", "c0", "eth0", 300.0)
    late = b.add("dcos", "c0", "eth0", {}, 300.0 + REBIND)
    assert late.ip != "9.0.1.2/29"
    b.delete("dcos", "c1", "eth1", 400.0)
    taken = b.add("dcos", "c2", "eth0", {}, 401.0, [str(first.ip)])  # someone asked for it
    assert taken.ip == first.ip
    assert b.add("dcos", "c1", "eth0", {}, 402.0).ip != first.ip


def test_check_needs_a_lease_inside_the_current_range(tmp_path: Path) -> None:
    b = book(tmp_path)
    b.add("dcos", "c1", "eth0", {}, 0.0)
    b.check("dcos", "c1", "eth0")
    with pytest.raises(IpamError, match="has no address on this agent") as caught:
        b.check("dcos", "c2", "eth0")
    assert caught.value.code == 1000
    moved = Half("dcos", IPv4Network("9.0.2.0/29"), "9.0.2.1", HALF.subnet6, HALF.gateway6)
    b.set_halves({"dcos": moved})
    with pytest.raises(IpamError, match=r"holds 9\.0\.1\.2/29, which is not in this agent's range"):
        b.check("dcos", "c1", "eth0")
    with pytest.raises(IpamError, match="not allocated to this agent") as unknown:
        b.add("other", "c1", "eth0", {}, 0.0)
    assert unknown.value.code == 7


def test_leases_survive_a_restart_and_a_damaged_file_is_refused(tmp_path: Path) -> None:
    b = book(tmp_path)
    lease = b.add("dcos", "c1", "eth0", {"name": "web", "framework": "marathon"}, 5.0)
    again = AddressBook(tmp_path / "ipam.json")
    again.set_halves(SMALL)
    assert again.leases() == [lease]
    assert again.add("dcos", "c2", "eth0", {}, 0.0).ip == "9.0.1.3/29"
    (tmp_path / "ipam.json").write_text('{"format": 1, "leases": [{"network": 5}]}')
    with pytest.raises(IpamError, match=r"ipam\.json is damaged .*move it aside"):
        AddressBook(tmp_path / "ipam.json")


def test_a_failed_write_hands_nothing_out(tmp_path: Path) -> None:
    b = book(tmp_path)
    (tmp_path / "ipam.json.tmp").mkdir()  # the temporary file cannot be created
    with pytest.raises(IpamError, match="cannot write the lease file"):
        b.add("dcos", "c1", "eth0", {}, 0.0)
    assert b.leases() == []
    (tmp_path / "ipam.json.tmp").rmdir()
    assert b.add("dcos", "c1", "eth0", {}, 0.0).ip == "9.0.1.2/29"


def test_a_requested_address_is_given_as_asked_or_refused(tmp_path: Path) -> None:
    b = book(tmp_path)
    lease = b.add("dcos", "c1", "eth0", {}, 1.0, ["9.0.1.5"])
    assert lease.ip == "9.0.1.5/29"
    assert lease.ip6 == "fd01:b::1:0:0:2/125"  # the family not asked for: round-robin
    # the round-robin does not hand out the requested one again
    assert [b.add("dcos", f"n{i}", "eth0", {}, 1.0).ip for i in range(3)] == [
        "9.0.1.2/29",
        "9.0.1.3/29",
        "9.0.1.4/29",
    ]
    # both families, a prefix length as static's IP= carries it
    both = b.add("dcos", "c2", "eth0", {}, 1.0, ["9.0.1.6/29", "fd01:b::1:0:0:7"])
    assert (both.ip, both.ip6) == ("9.0.1.6/29", "fd01:b::1:0:0:7/125")
    # a retried ADD asking for what the attachment holds gets it; another address is refused
    assert b.add("dcos", "c1", "eth0", {}, 2.0, ["9.0.1.5"]) == lease
    with pytest.raises(IpamError, match=r"holds 9\.0\.1\.5/29, not the 9\.0\.1\.6"):
        b.add("dcos", "c1", "eth0", {}, 2.0, ["9.0.1.6"])
    refusals = {
        "9.0.1.5": (1001, r"9\.0\.1\.5 is in use"),  # held by c1
        "9.0.2.5": (7, r"not in this agent's range 9\.0\.1\.0/29"),
        "9.0.1.1": (7, "reserved"),  # the gateway
        "9.0.1.7": (7, "reserved"),  # broadcast
        "9.0.1.0": (7, "reserved"),  # the network address
        "fd01:b::2:0:0:2": (7, "not in this agent.s range fd01:b:0:0:1::/125"),
        "nine": (7, "is not an IP address"),
    }
    for asked, (code, message) in refusals.items():
        with pytest.raises(IpamError, match=message) as caught:
            b.add("dcos", "new", "eth0", {}, 3.0, [asked])
        assert caught.value.code == code, asked
    with pytest.raises(IpamError, match="two IPv4 addresses requested"):
        b.add("dcos", "new", "eth0", {}, 3.0, ["9.0.1.2", "9.0.1.3"])
    assert all(lease.container_id != "new" for lease in b.leases())  # nothing handed out
    v4only = AddressBook(tmp_path / "v4.json")
    v4only.set_halves({"dcos": Half("dcos", IPv4Network("9.0.1.0/29"), "9.0.1.1")})
    with pytest.raises(IpamError, match="has no IPv6 range"):
        v4only.add("dcos", "c1", "eth0", {}, 1.0, ["fd01:b::1:0:0:2"])
    # released, it may be asked for again (podman network reload: DEL, then ADD with IP=)
    b.delete("dcos", "c1", "eth0")
    assert b.add("dcos", "c1", "eth0", {}, 4.0, ["9.0.1.5"]).ip == "9.0.1.5/29"
    assert AddressBook(tmp_path / "ipam.json").leases() == b.leases()  # on disk


def test_halves_from_agent_info() -> None:
    info = {
        "ip": "198.18.0.11",
        "overlays": [
            {
                "info": {"name": "dcos"},
                "mesos_bridge": {"name": "m-dcos", "ip": "9.0.1.1/25", "ip6": "fd01:b::1:0:0:1/81"},
                "state": {"status": "STATUS_OK"},
            },
            {"info": {"name": "bad"}, "state": {"status": "STATUS_FAILED", "error": "x"}},
        ],
    }
    assert halves_from_info(AgentInfo.from_json(info)) == {
        "dcos": Half(
            "dcos",
            IPv4Network("9.0.1.0/25"),
            "9.0.1.1",
            IPv6Network("fd01:b:0:0:1::/81"),
            "fd01:b::1:0:0:1",
        )
    }


def test_task_identity_from_each_runtime() -> None:
    assert task_identity(
        "abc", parse_cni_args("IgnoreUnknown=1;VXNET_TASK=web;VXNET_FRAMEWORK=marathon"), None
    ) == {
        "name": "web",
        "framework": "marathon",
        "ports_mapped": False,
    }
    k8s = parse_cni_args("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7;K8S_POD_INFRA_CONTAINER_ID=x")
    assert task_identity("abc", k8s, None)["name"] == "cart-7"
    assert task_identity("abc", k8s, None)["framework"] == "shop"
    podman = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=api")  # podman names no namespace
    assert task_identity("abc", podman, None) == {
        "name": "api",
        "framework": "podman",
        "ports_mapped": False,
    }
    mesos = {
        "org.apache.mesos": {
            "network_info": {
                "name": "dcos",
                "labels": {"labels": [{"key": "vxnet.task", "value": "db"}]},
                "port_mappings": [{"host_port": 8080, "container_port": 80}],
            }
        }
    }
    assert task_identity("abc", {}, mesos) == {
        "name": "db",
        "framework": "mesos",
        "ports_mapped": True,
    }
    assert task_identity("abc", {}, None) == {
        "name": "abc",
        "framework": "cni",
        "ports_mapped": False,
    }
    assert parse_cni_args("a=1;;b;=2;c=x=y") == {"a": "1", "c": "x=y"}


class Leasing(RuleBasedStateMachine):
    """Generated ADD/DEL/restart sequences: no address twice, never a reserved one."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile
        from pathlib import Path

        self._dir = tempfile.TemporaryDirectory()
        self.path = Path(self._dir.name) / "ipam.json"
        self.book = AddressBook(self.path)
        self.book.set_halves(SMALL)
        self.model: dict[str, Any] = {}

    @rule(cid=st.sampled_from([f"c{i}" for i in range(8)]))
    def add(self, cid: str) -> None:
        if cid not in self.model and len(self.model) == 5:
            with pytest.raises(IpamError) as caught:
                self.book.add("dcos", cid, "eth0", {}, 0.0)
            assert caught.value.code == 11
            return
        lease = self.book.add("dcos", cid, "eth0", {}, 0.0)
        if cid in self.model:
            assert self.model[cid] == lease
        self.model[cid] = lease

    @rule(cid=st.sampled_from([f"c{i}" for i in range(8)]))
    def delete(self, cid: str) -> None:
        assert self.book.delete("dcos", cid, "eth0") == self.model.pop(cid, None)

    @rule()
    def restart(self) -> None:
        self.book = AddressBook(self.path)
        self.book.set_halves(SMALL)

    @invariant()
    def no_address_twice_and_none_reserved(self) -> None:
        leases = self.book.leases()
        assert {lease.container_id: lease for lease in leases} == self.model
        for family, reserved in (
            ("ip", {"9.0.1.0", "9.0.1.1", "9.0.1.7"}),
            ("ip6", {"fd01:b::1:0:0:0", "fd01:b::1:0:0:1"}),
        ):
            held = [str(ip_interface(getattr(lease, family)).ip) for lease in leases]
            assert len(held) == len(set(held))
            assert not reserved & set(held)
            subnet = HALF.subnet if family == "ip" else HALF.subnet6
            assert subnet is not None
            assert all(ip_address(h) in subnet for h in held)

    def teardown(self) -> None:
        self._dir.cleanup()


TestLeasing = Leasing.TestCase
TestLeasing.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# --- the plugin, against a stand-in agent on a unix socket ---------------------------------------


def serve_once(path: str, answer: bytes, seen: list[Any]) -> threading.Thread:
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            data = b""
            while not data.endswith(b"\n"):
                data += conn.recv(65536)
            seen.append(json.loads(data))
            conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "VXNET_TASK=web",
}


def conf(path: str, version: str = "1.0.0") -> str:
    data = {"cniVersion": version, "name": "dcos", "ipam": {"type": "vxnet-ipam", "socket": path}}
    return json.dumps(data)


def test_plugin_sends_everything_to_the_agent_and_prints_its_answer(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    seen: list[Any] = []
    thread = serve_once(path, b'0{"cniVersion": "1.0.0"}\n', seen)
    text = conf(path)
    assert ipam_plugin.run(ENV, text) == (0, '{"cniVersion": "1.0.0"}\n')
    thread.join(5)
    assert seen == [["ADD", "c1", "eth0", "VXNET_TASK=web", text]]
    thread = serve_once(path, b'1{"code": 11}\n', seen)
    assert ipam_plugin.run(ENV, text) == (1, '{"code": 11}\n')
    thread.join(5)
    thread = serve_once(path, b"garbage", seen)
    status, out = ipam_plugin.run(ENV, text)
    thread.join(5)
    assert status == 1
    assert json.loads(out)["msg"] == "the vxnet agent's answer is malformed"


def test_plugin_errors_without_an_agent_or_with_bad_input(tmp_path: Path) -> None:
    path = str(tmp_path / "none")
    status, out = ipam_plugin.run(ENV, conf(path, "0.4.0"))
    assert status == 1
    assert json.loads(out) == {
        "cniVersion": "0.4.0",
        "code": 11,
        "msg": "the vxnet agent is not running on this host",
        "details": f"no socket at {path}",
    }
    status, out = ipam_plugin.run({**ENV, "CNI_COMMAND": "VERSION"}, "")
    assert status == 0
    assert json.loads(out) == {
        "cniVersion": "1.0.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"],
    }
    for bad in ("{nope", '{"a": 1} x', "", "[1, 2]"):
        status, out = ipam_plugin.run(ENV, bad)
        assert status == 1
        assert json.loads(out)["code"] == 6, bad


def test_plugin_written_by_the_agent_passes_the_input_on_unread(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    seen: list[Any] = []
    thread = serve_once(path, b"0", seen)
    weird = '{"cniVersion": "1.0.0",\n "name": "d\\u00e9\\"x", "ipam": {}}'
    assert ipam_plugin.run({**ENV, "CNI_COMMAND": "DEL"}, weird, path) == (0, "")
    thread.join(5)
    assert seen == [["DEL", "c1", "eth0", "VXNET_TASK=web", weird]]
    status, out = ipam_plugin.run(ENV, "{nope", str(tmp_path / "none"))
    assert status == 1
    assert json.loads(out)["code"] == 11  # no agent; its error in the default version


def test_plugin_decodes_json_as_the_json_module_does() -> None:
    text = '{"a": [1, 2.5, -3e2, true, false, null], "s": "\\u00e9\\n\\"", "n": {}}'
    assert ipam_plugin._loads(text) == json.loads(text)
    assert ipam_plugin._loads("  [] \n") == []
