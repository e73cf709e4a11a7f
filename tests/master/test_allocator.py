"""The subnet allocator: every rule by example, a model-checked state machine, and scale."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vxnet.config import Allow, NetworkConfig, Overlay
from vxnet.master._allocator import Allocator, Outcome, agent_address_problem, network_json

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vxnet.records import AgentInfo

DCOS = Overlay("dcos", subnet=IPv4Network("9.0.0.0/8"), prefix=24)
DCOS6 = Overlay("dcos6", subnet6=IPv6Network("fd01:b::/64"), prefix6=80)
DEFAULT = NetworkConfig()
TWO = NetworkConfig(overlays=(DCOS, DCOS6))
DUAL = NetworkConfig(overlays=(replace(DCOS, subnet6=IPv6Network("fd01:b::/64"), prefix6=80),))

DCOS_INFO = {"name": "dcos", "subnet": "9.0.0.0/8", "prefix": 24}
DCOS6_INFO = {"name": "dcos6", "subnet6": "fd01:b::/64", "prefix6": 80}
OK = {"status": "STATUS_OK"}


def register(
    allocator: Allocator,
    ip: str,
    networks: Sequence[str] | None = None,
    mesos_bridge: bool = True,
    docker_bridge: bool = True,
) -> Outcome:
    return allocator.apply(Allocator.register_command(ip, networks, mesos_bridge, docker_bridge))


def agent_of(outcome: Outcome) -> dict[str, Any]:
    assert outcome.ok, outcome.error
    assert outcome.agent is not None
    return outcome.agent.to_json()


def info_json(info: AgentInfo | None) -> dict[str, Any]:
    assert info is not None
    return info.to_json()


def vxlan(vtep_ip: str, vtep_mac: str, vtep_ip6: str | None = None) -> dict[str, Any]:
    backend: dict[str, Any] = {
        "vni": 1024,
        "vtep_name": "vtep1024",
        "vtep_ip": vtep_ip,
        "vtep_mac": vtep_mac,
        "vxlan_port": 64000,
        "vtep_mtu": 1500,
    }
    if vtep_ip6 is not None:
        backend["vtep_ip6"] = vtep_ip6
    return {"vxlan": backend}


def agent_ips(count: int, first: str = "198.18.0.11") -> list[str]:
    return [str(IPv4Address(first) + i) for i in range(count)]


# --- allocation by example ------------------------------------------------------------------------


def test_first_agent_gets_the_exact_agent_info() -> None:
    allocator = Allocator(DEFAULT)
    outcome = register(allocator, "198.18.0.11")
    assert outcome == Outcome(ok=True, agent=outcome.agent, changed=True)
    assert agent_of(outcome) == {
        "ip": "198.18.0.11",
        "overlays": [
            {
                "info": DCOS_INFO,
                "subnet": "9.0.0.0/24",
                "mesos_bridge": {"name": "m-dcos", "mtu": 1420, "ip": "9.0.0.1/25"},
                "docker_bridge": {"name": "d-dcos", "mtu": 1420, "ip": "9.0.0.129/25"},
                "backend": vxlan("44.128.0.1/20", "70:b3:d5:80:00:01"),
                "state": OK,
            }
        ],
    }
    assert allocator.agent_info("198.18.0.11") == outcome.agent
    assert allocator.registrations == 1


def test_an_unanswered_registration_changes_the_state_alike_but_builds_no_agent_info() -> None:
    answered, silent = Allocator(DEFAULT), Allocator(DEFAULT)
    for ip in agent_ips(3):
        command = Allocator.register_command(ip, None, True, True)
        expected = answered.apply(command)
        outcome = silent.apply(command, answer=False)
        assert outcome == Outcome(ok=True, agent=None, changed=True)
        assert silent.agent_info(ip) == expected.agent
    assert silent.snapshot() == answered.snapshot()
    again = silent.apply(Allocator.register_command("198.18.0.11", None, True, True), answer=False)
    assert again == Outcome(ok=True, agent=None, changed=False)


def test_agents_get_the_lowest_free_vtep_address_and_subnet_in_turn() -> None:
    allocator = Allocator(DEFAULT)
    infos = [agent_of(register(allocator, ip)) for ip in agent_ips(3)]
    backends = [i["overlays"][0]["backend"]["vxlan"] for i in infos]
    assert [b["vtep_ip"] for b in backends] == ["44.128.0.1/20", "44.128.0.2/20", "44.128.0.3/20"]
    assert [b["vtep_mac"] for b in backends] == [
        "70:b3:d5:80:00:01",
        "70:b3:d5:80:00:02",
        "70:b3:d5:80:00:03",
    ]
    assert [i["overlays"][0]["subnet"] for i in infos] == ["9.0.0.0/24", "9.0.1.0/24", "9.0.2.0/24"]


def test_vtep_mac_is_the_oui_plus_the_low_24_bits_of_the_vtep_ip() -> None:
    network = replace(
        DEFAULT, vtep_subnet=IPv4Network("10.1.0.0/16"), vtep_mac_oui="02:AB:CD:00:00:00"
    )
    allocator = Allocator(network)
    infos = [agent_of(register(allocator, ip)) for ip in agent_ips(257, "198.18.1.0")]
    first = infos[0]["overlays"][0]["backend"]["vxlan"]
    last = infos[-1]["overlays"][0]["backend"]["vxlan"]
    assert (first["vtep_ip"], first["vtep_mac"]) == ("10.1.0.1/16", "02:ab:cd:01:00:01")
    assert (last["vtep_ip"], last["vtep_mac"]) == ("10.1.1.1/16", "02:ab:cd:01:01:01")


def test_dual_stack_network_splits_both_subnets_into_halves() -> None:
    allocator = Allocator(DUAL)
    register(allocator, "198.18.0.10")
    assert agent_of(register(allocator, "198.18.0.11"))["overlays"] == [
        {
            "info": {**DCOS_INFO, "subnet6": "fd01:b::/64", "prefix6": 80},
            "subnet": "9.0.1.0/24",
            "subnet6": "fd01:b:0:0:1::/80",
            "mesos_bridge": {
                "name": "m-dcos",
                "mtu": 1420,
                "ip": "9.0.1.1/25",
                "ip6": "fd01:b::1:0:0:1/81",
            },
            "docker_bridge": {
                "name": "d-dcos",
                "mtu": 1420,
                "ip": "9.0.1.129/25",
                "ip6": "fd01:b::1:8000:0:1/81",
            },
            "backend": vxlan("44.128.0.2/20", "70:b3:d5:80:00:02", "fd01:a::2/64"),
            "state": OK,
        }
    ]
    first = info_json(allocator.agent_info("198.18.0.10"))
    assert first is not None
    assert first["overlays"][0]["subnet6"] == "fd01:b::/80"
    assert first["overlays"][0]["mesos_bridge"]["ip6"] == "fd01:b::1/81"
    assert first["overlays"][0]["docker_bridge"]["ip6"] == "fd01:b::8000:0:1/81"


def test_ipv6_only_network_and_every_overlay_carries_the_agents_vtep_ip6() -> None:
    allocator = Allocator(TWO)
    assert agent_of(register(allocator, "198.18.0.11"))["overlays"] == [
        {
            "info": DCOS_INFO,
            "subnet": "9.0.0.0/24",
            "mesos_bridge": {"name": "m-dcos", "mtu": 1420, "ip": "9.0.0.1/25"},
            "docker_bridge": {"name": "d-dcos", "mtu": 1420, "ip": "9.0.0.129/25"},
            "backend": vxlan("44.128.0.1/20", "70:b3:d5:80:00:01", "fd01:a::1/64"),
            "state": OK,
        },
        {
            "info": DCOS6_INFO,
            "subnet6": "fd01:b::/80",
            "mesos_bridge": {"name": "m-dcos6", "mtu": 1420, "ip6": "fd01:b::1/81"},
            "docker_bridge": {"name": "d-dcos6", "mtu": 1420, "ip6": "fd01:b::8000:0:1/81"},
            "backend": vxlan("44.128.0.1/20", "70:b3:d5:80:00:01", "fd01:a::1/64"),
            "state": OK,
        },
    ]


def test_vtep_ip6_only_for_agents_holding_an_ipv6_network() -> None:
    allocator = Allocator(TWO)
    v4_only = agent_of(register(allocator, "198.18.0.11", ["dcos"]))
    assert "vtep_ip6" not in v4_only["overlays"][0]["backend"]["vxlan"]
    both = agent_of(register(allocator, "198.18.0.12"))
    assert both["overlays"][0]["backend"]["vxlan"]["vtep_ip6"] == "fd01:a::1/64"
    later = agent_of(register(allocator, "198.18.0.11", ["dcos6"]))
    assert [o["backend"]["vxlan"]["vtep_ip6"] for o in later["overlays"]] == ["fd01:a::2/64"] * 2


def test_bridge_turned_off_is_left_out_but_the_whole_subnet_is_held() -> None:
    allocator = Allocator(DEFAULT)
    overlay = agent_of(register(allocator, "198.18.0.11", None, mesos_bridge=False))["overlays"][0]
    assert overlay["subnet"] == "9.0.0.0/24"
    assert "mesos_bridge" not in overlay
    assert overlay["docker_bridge"] == {"name": "d-dcos", "mtu": 1420, "ip": "9.0.0.129/25"}
    overlay = agent_of(register(allocator, "198.18.0.12", None, docker_bridge=False))["overlays"][0]
    assert overlay["subnet"] == "9.0.1.0/24"
    assert "docker_bridge" not in overlay
    assert overlay["mesos_bridge"] == {"name": "m-dcos", "mtu": 1420, "ip": "9.0.1.1/25"}


def test_new_bridge_flags_change_only_the_bridges_of_the_networks_asked_for() -> None:
    allocator = Allocator(TWO)
    register(allocator, "198.18.0.11", None, mesos_bridge=False, docker_bridge=False)
    assert not allocator.satisfied("198.18.0.11", ["dcos"])
    outcome = register(allocator, "198.18.0.11", ["dcos"])
    dcos, dcos6 = agent_of(outcome)["overlays"]
    assert outcome.changed
    assert dcos["subnet"] == "9.0.0.0/24"
    assert dcos["mesos_bridge"] == {"name": "m-dcos", "mtu": 1420, "ip": "9.0.0.1/25"}
    assert dcos["docker_bridge"] == {"name": "d-dcos", "mtu": 1420, "ip": "9.0.0.129/25"}
    assert "mesos_bridge" not in dcos6
    assert "docker_bridge" not in dcos6
    assert dcos6["subnet6"] == "fd01:b::/80"
    assert allocator.registrations == 2


def test_registering_again_with_the_same_request_changes_nothing() -> None:
    allocator = Allocator(TWO)
    first = register(allocator, "198.18.0.11", ["dcos6"], mesos_bridge=False)
    snapshot = allocator.snapshot()
    assert allocator.satisfied("198.18.0.11", ["dcos6"], mesos_bridge=False)
    again = register(allocator, "198.18.0.11", ["dcos6"], mesos_bridge=False)
    assert again == Outcome(ok=True, agent=first.agent, changed=False)
    assert allocator.snapshot() == snapshot
    assert allocator.registrations == 1


def test_satisfied_is_false_for_what_would_change_or_be_refused() -> None:
    allocator = Allocator(TWO)
    register(allocator, "198.18.0.11", ["dcos"])
    assert allocator.satisfied("198.18.0.11", ["dcos"])
    assert allocator.satisfied("198.18.0.11", [])
    assert not allocator.satisfied("198.18.0.11", None)
    assert not allocator.satisfied("198.18.0.11", ["dcos"], docker_bridge=False)
    assert not allocator.satisfied("198.18.0.12", ["dcos"])
    assert not allocator.satisfied("198.18.0.11", ["nope"])
    assert not allocator.satisfied("not-an-ip", ["dcos"])


def test_networks_not_asked_for_again_are_kept() -> None:
    allocator = Allocator(TWO)
    register(allocator, "198.18.0.11", ["dcos6"])
    both = agent_of(register(allocator, "198.18.0.11", ["dcos"]))
    assert [o["info"]["name"] for o in both["overlays"]] == ["dcos", "dcos6"]
    assert both["overlays"][1]["subnet6"] == "fd01:b::/80"
    assert register(allocator, "198.18.0.11", []).changed is False
    assert allocator.free_counts()["dcos6"]["used6"] == 1


def test_agents_are_listed_by_ip_in_numeric_order() -> None:
    allocator = Allocator(DEFAULT)
    for ip in ("10.0.0.10", "10.0.0.9", "9.255.0.1"):
        register(allocator, ip)
    state = allocator.state()
    assert state["network"] == network_json(DEFAULT)
    assert [a["ip"] for a in state["agents"]] == ["9.255.0.1", "10.0.0.9", "10.0.0.10"]


def test_network_json() -> None:
    network = NetworkConfig(overlays=(DCOS, DCOS6, replace(DCOS6, name="both", subnet=None)))
    dual = Overlay("dual", IPv4Network("10.0.0.0/8"), 20, IPv6Network("fd01:c::/64"), 96)
    assert network_json(replace(network, overlays=(DCOS, DCOS6, dual))) == {
        "vtep_subnet": "44.128.0.0/20",
        "vtep_subnet6": "fd01:a::/64",
        "vtep_mac_oui": "70:B3:D5:00:00:00",
        "vtep_mtu": 1500,
        "overlay_mtu": 1420,
        "vni": 1024,
        "vxlan_port": 64000,
        "overlays": [
            DCOS_INFO,
            DCOS6_INFO,
            {
                "name": "dual",
                "subnet": "10.0.0.0/8",
                "prefix": 20,
                "subnet6": "fd01:c::/64",
                "prefix6": 96,
            },
        ],
        "isolation": True,
        "allow": [],
    }


def test_the_isolation_policy_travels_in_the_network_configuration() -> None:
    dev = Overlay("dev", IPv4Network("10.1.0.0/16"), 24, allow_hosts=("198.51.100.0/24",))
    prod = Overlay("prod", IPv4Network("10.2.0.0/16"), 24)
    network = NetworkConfig(
        overlays=(dev, prod),
        isolation=True,
        allow=(Allow("dev", "prod", ("tcp/5432",)),),
    )
    data = network_json(network)
    assert data["allow"] == [{"from": "dev", "to": "prod", "ports": ["tcp/5432"]}]
    assert data["overlays"][0]["allow_hosts"] == ["198.51.100.0/24"]
    # as a log entry: applied by every master alike, a change of policy is a change
    allocator = Allocator(NetworkConfig(overlays=(dev, prod)))
    assert allocator.apply(Allocator.network_command(network)).changed
    assert allocator.network == network
    opened = replace(network, isolation=False)
    assert allocator.apply(Allocator.network_command(opened)).changed
    assert allocator.network.isolation is False
    bad = msgpack.unpackb(Allocator.network_command(network))
    bad["network"]["allow"] = [{"from": "dev", "to": "nowhere"}]
    refused = allocator.apply(msgpack.packb(bad))
    assert not refused.ok
    assert "no network 'nowhere'" in str(refused.error)


# --- exhaustion -----------------------------------------------------------------------------------

SMALL_NET = NetworkConfig(
    overlays=(Overlay("small", subnet=IPv4Network("10.0.0.0/22"), prefix=24), DCOS),
)


def test_exhausted_network_fails_while_the_others_are_allocated() -> None:
    allocator = Allocator(SMALL_NET)
    for ip in agent_ips(4):
        register(allocator, ip)
    outcome = register(allocator, "198.18.0.15")
    small, dcos = agent_of(outcome)["overlays"]
    assert small == {
        "info": {"name": "small", "subnet": "10.0.0.0/22", "prefix": 24},
        "state": {
            "status": "STATUS_FAILED",
            "error": "small: no free /24 subnet left (4 of 4 in use)",
        },
    }
    assert dcos["subnet"] == "9.0.4.0/24"
    assert dcos["state"] == OK
    assert outcome.ok
    assert outcome.changed
    assert allocator.failures["subnet_exhausted"] == 1
    assert allocator.free_counts()["small"] == {"total": 4, "used": 4, "free": 0}


def test_failed_network_is_retried_by_the_next_registration() -> None:
    allocator = Allocator(SMALL_NET)
    for ip in agent_ips(5):
        register(allocator, ip)
    assert allocator.satisfied("198.18.0.15", None)
    again = register(allocator, "198.18.0.15")
    assert not again.changed
    assert allocator.failures["subnet_exhausted"] == 2
    assert register(allocator, "198.18.0.12", ["nope"]).ok is False
    assert allocator.apply(Allocator.delete_command(["198.18.0.12"])).changed
    assert not allocator.satisfied("198.18.0.15", None)
    small, dcos = agent_of(register(allocator, "198.18.0.15", ["dcos"]))["overlays"]
    assert small["subnet"] == "10.0.1.0/24"
    assert small["state"] == OK
    assert dcos["subnet"] == "9.0.4.0/24"


def test_ipv6_exhaustion_names_the_ipv6_prefix() -> None:
    tiny6 = Overlay("v6", subnet6=IPv6Network("fd01:c::/120"), prefix6=122)
    allocator = Allocator(NetworkConfig(overlays=(DCOS, tiny6)))
    for ip in agent_ips(4):
        register(allocator, ip)
    assert agent_of(register(allocator, "198.18.0.15"))["overlays"][1]["state"] == {
        "status": "STATUS_FAILED",
        "error": "v6: no free /122 subnet left (4 of 4 in use)",
    }


def test_vtep_exhaustion_refuses_the_whole_registration() -> None:
    allocator = Allocator(replace(DEFAULT, vtep_subnet=IPv4Network("44.128.0.0/29")))
    infos = [agent_of(register(allocator, ip)) for ip in agent_ips(6)]
    assert infos[-1]["overlays"][0]["backend"]["vxlan"]["vtep_ip"] == "44.128.0.6/29"
    state = allocator.state()
    outcome = register(allocator, "198.18.0.17")
    assert outcome == Outcome(
        ok=False, error="vtep_subnet 44.128.0.0/29: no free VTEP address left (6 of 6 in use)"
    )
    assert allocator.state() == state
    assert allocator.agent_info("198.18.0.17") is None
    assert allocator.failures["vtep_exhausted"] == 1
    assert allocator.free_counts()["dcos"]["used"] == 6
    assert allocator.free_counts()["vtep"]["free"] == 0
    assert not allocator.satisfied("198.18.0.17", None)
    assert register(allocator, "198.18.0.11", None, mesos_bridge=False).changed


def test_vtep_ip6_exhaustion_refuses_the_whole_registration() -> None:
    allocator = Allocator(replace(TWO, vtep_subnet6=IPv6Network("fd01:a::/126")))
    infos = [agent_of(register(allocator, ip, ["dcos6"])) for ip in agent_ips(3)]
    assert [i["overlays"][0]["backend"]["vxlan"]["vtep_ip6"] for i in infos] == [
        "fd01:a::1/126",
        "fd01:a::2/126",
        "fd01:a::3/126",
    ]
    refused = "vtep_subnet6 fd01:a::/126: no free VTEP address left (3 of 3 in use)"
    assert register(allocator, "198.18.0.14", ["dcos6"]) == Outcome(ok=False, error=refused)
    v4_only = agent_of(register(allocator, "198.18.0.14", ["dcos"]))
    assert "vtep_ip6" not in v4_only["overlays"][0]["backend"]["vxlan"]
    state = allocator.state()
    assert register(allocator, "198.18.0.14", None) == Outcome(ok=False, error=refused)
    assert allocator.state() == state
    assert allocator.failures["vtep_exhausted"] == 2


# --- deletion -------------------------------------------------------------------------------------


def test_delete_frees_everything_and_freed_space_is_reused_lowest_first() -> None:
    allocator = Allocator(TWO)
    for ip in agent_ips(4):
        register(allocator, ip)
    deleted = allocator.apply(
        Allocator.delete_command(["198.18.0.13", "203.0.113.1", "198.18.0.12"])
    )
    assert deleted == Outcome(ok=True, changed=True)
    assert allocator.agent_info("198.18.0.12") is None
    assert allocator.free_counts()["vtep"]["used"] == 2
    assert allocator.free_counts()["dcos"]["used"] == 2
    assert allocator.free_counts()["dcos6"]["used6"] == 2
    assert allocator.apply(Allocator.delete_command(["203.0.113.1"])) == Outcome(ok=True)
    reused = agent_of(register(allocator, "198.18.0.20"))
    dcos, dcos6 = reused["overlays"]
    assert dcos["subnet"] == "9.0.1.0/24"
    assert dcos6["subnet6"] == "fd01:b:0:0:1::/80"
    assert dcos["backend"] == vxlan("44.128.0.2/20", "70:b3:d5:80:00:02", "fd01:a::2/64")
    third = agent_of(register(allocator, "198.18.0.21"))["overlays"][0]
    assert third["subnet"] == "9.0.2.0/24"
    assert agent_of(register(allocator, "198.18.0.22"))["overlays"][0]["subnet"] == "9.0.4.0/24"


# --- network changes ------------------------------------------------------------------------------


def two_agents(network: NetworkConfig = TWO) -> Allocator:
    allocator = Allocator(network)
    register(allocator, "198.18.0.12")
    register(allocator, "198.18.0.11")
    return allocator


def test_changes_that_move_nothing_held_are_applied() -> None:
    allocator = two_agents()
    new = replace(TWO, vtep_mtu=9000, overlay_mtu=8950, vni=4242, vxlan_port=4789)
    new = replace(new, vtep_mac_oui="70:b3:d5:00:00:00")
    assert allocator.network_change_problems(new) == []
    assert allocator.apply(Allocator.network_command(new)) == Outcome(ok=True, changed=True)
    assert allocator.network == new
    backend = agent_of(register(allocator, "198.18.0.11"))["overlays"][0]["backend"]["vxlan"]
    assert backend == {
        "vni": 4242,
        "vtep_name": "vtep4242",
        "vtep_ip": "44.128.0.2/20",
        "vtep_mac": "70:b3:d5:80:00:02",
        "vxlan_port": 4789,
        "vtep_mtu": 9000,
        "vtep_ip6": "fd01:a::2/64",
    }
    assert allocator.apply(Allocator.network_command(new)) == Outcome(ok=True, changed=False)


def test_added_network_is_allocated_at_the_next_registration_for_all_networks() -> None:
    allocator = Allocator(DEFAULT)
    register(allocator, "198.18.0.11")
    register(allocator, "198.18.0.12")
    assert allocator.apply(Allocator.network_command(TWO)).changed
    assert allocator.satisfied("198.18.0.11", ["dcos"])
    assert [
        o["info"]["name"]
        for o in agent_of(register(allocator, "198.18.0.11", ["dcos"]))["overlays"]
    ] == ["dcos"]
    overlays = agent_of(register(allocator, "198.18.0.12"))["overlays"]
    assert [o["info"]["name"] for o in overlays] == ["dcos", "dcos6"]
    assert overlays[1]["subnet6"] == "fd01:b::/80"
    assert overlays[0]["backend"]["vxlan"]["vtep_ip6"] == "fd01:a::1/64"


def test_networks_nobody_holds_may_change_or_go() -> None:
    allocator = Allocator(TWO)
    register(allocator, "198.18.0.11", ["dcos"])
    moved = replace(DCOS6, subnet6=IPv6Network("fd01:c::/64"), prefix6=96)
    assert allocator.network_change_problems(replace(TWO, overlays=(DCOS, moved))) == []
    assert (
        allocator.network_change_problems(replace(TWO, vtep_subnet6=IPv6Network("fd01:d::/64")))
        == []
    )
    assert allocator.network_change_problems(DEFAULT) == []
    assert allocator.apply(Allocator.network_command(DEFAULT)).changed
    assert allocator.free_counts() == {
        "dcos": {"total": 65536, "used": 1, "free": 65535},
        "vtep": {
            "total": 4094,
            "used": 1,
            "free": 4093,
            "total6": 2**64 - 1,
            "used6": 0,
            "free6": 2**64 - 1,
        },
    }


def test_removing_a_network_drops_the_agents_failed_requests_for_it() -> None:
    tiny = Overlay("tiny", subnet=IPv4Network("10.0.0.0/28"), prefix=29)
    allocator = Allocator(NetworkConfig(overlays=(DCOS, tiny)))
    for ip in agent_ips(3):
        register(allocator, ip)
    third = info_json(allocator.agent_info("198.18.0.13"))
    assert third is not None
    assert third["overlays"][1]["state"]["status"] == "STATUS_FAILED"
    assert allocator.apply(Allocator.network_command(DEFAULT)).ok is False
    register(allocator, "198.18.0.11", [])
    assert allocator.apply(Allocator.delete_command(["198.18.0.11", "198.18.0.12"])).changed
    assert allocator.apply(Allocator.network_command(DEFAULT)) == Outcome(ok=True, changed=True)
    third = info_json(allocator.agent_info("198.18.0.13"))
    assert third is not None
    assert [o["info"]["name"] for o in third["overlays"]] == ["dcos"]
    assert allocator.apply(Allocator.network_command(NetworkConfig(overlays=(DCOS, tiny)))).ok
    assert info_json(allocator.agent_info("198.18.0.13")) == third
    assert allocator.satisfied("198.18.0.13", ["dcos"])


def test_problems_name_the_networks_and_the_agents_holding_them() -> None:
    allocator = two_agents()
    moved = replace(DCOS, subnet=IPv4Network("10.0.0.0/8"), prefix=25)
    new = replace(
        TWO,
        vtep_subnet=IPv4Network("44.129.0.0/20"),
        vtep_subnet6=IPv6Network("fd01:c::/64"),
        vtep_mac_oui="02:00:00:00:00:00",
        overlays=(moved,),
    )
    problems = [
        "network dcos: subnet changes from 9.0.0.0/8 to 10.0.0.0/8 but agents 198.18.0.11, "
        "198.18.0.12 hold subnets in it",
        "network dcos: prefix changes from 24 to 25 but agents 198.18.0.11, 198.18.0.12 hold "
        "subnets in it",
        "network dcos6: removed but agents 198.18.0.11, 198.18.0.12 hold subnets in it",
        "vtep_subnet: changes from 44.128.0.0/20 to 44.129.0.0/20 but 2 agents hold VTEP "
        "addresses in it (198.18.0.11, 198.18.0.12)",
        "vtep_subnet6: changes from fd01:a::/64 to fd01:c::/64 but 2 agents hold VTEP IPv6 "
        "addresses in it (198.18.0.11, 198.18.0.12)",
        "vtep_mac_oui: changes from 70:B3:D5:00:00:00 to 02:00:00:00:00:00 but 2 agents hold "
        "VTEP MACs under it (198.18.0.11, 198.18.0.12)",
    ]
    assert allocator.network_change_problems(new) == problems
    state, failures = allocator.state(), dict(allocator.failures)
    assert allocator.apply(Allocator.network_command(new)) == Outcome(
        ok=False, error="; ".join(problems)
    )
    assert allocator.state() == state
    assert allocator.failures == failures


def test_ipv6_added_to_or_removed_from_a_held_network_is_a_problem() -> None:
    allocator = Allocator(DEFAULT)
    register(allocator, "198.18.0.11")
    assert allocator.network_change_problems(DUAL) == [
        "network dcos: subnet6 changes from none to fd01:b::/64 but agents 198.18.0.11 hold "
        "subnets in it"
    ]
    allocator = Allocator(DUAL)
    register(allocator, "198.18.0.11")
    assert allocator.network_change_problems(replace(DUAL, overlays=(DCOS,))) == [
        "network dcos: subnet6 changes from fd01:b::/64 to none but agents 198.18.0.11 hold "
        "subnets in it"
    ]
    prefix6 = replace(DUAL, overlays=(replace(DUAL.overlays[0], prefix6=96),))
    assert allocator.network_change_problems(prefix6) == [
        "network dcos: prefix6 changes from 80 to 96 but agents 198.18.0.11 hold subnets in it"
    ]


def test_long_agent_lists_are_cut_short() -> None:
    allocator = Allocator(DEFAULT)
    for ip in agent_ips(13):
        register(allocator, ip)
    shown = ", ".join(agent_ips(10))
    assert allocator.network_change_problems(
        replace(DEFAULT, vtep_subnet=IPv4Network("44.129.0.0/20"))
    ) == [
        "vtep_subnet: changes from 44.128.0.0/20 to 44.129.0.0/20 but 13 agents hold VTEP "
        f"addresses in it ({shown} and 3 more)"
    ]
    one = Allocator(DEFAULT)
    register(one, "198.18.0.11")
    assert one.network_change_problems(
        replace(DEFAULT, vtep_subnet=IPv4Network("44.129.0.0/20"))
    ) == [
        "vtep_subnet: changes from 44.128.0.0/20 to 44.129.0.0/20 but 1 agent holds VTEP "
        "addresses in it (198.18.0.11)"
    ]


def test_invalid_network_configuration_is_a_problem_and_refused() -> None:
    broken = replace(DEFAULT, overlays=(replace(DCOS, prefix=8),))
    allocator = Allocator(DEFAULT)
    [problem] = allocator.network_change_problems(broken)
    assert problem.startswith("network.overlays[0].prefix: /8 is not longer")
    outcome = allocator.apply(Allocator.network_command(broken))
    assert outcome == Outcome(ok=False, error=f"network: invalid configuration: {problem}")
    assert allocator.failures["bad_command"] == 1
    with pytest.raises(ValueError, match="prefix: /8 is not longer"):
        Allocator(broken)


# --- bad entries ----------------------------------------------------------------------------------


def packed(body: object) -> bytes:
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def register_body(**changes: object) -> bytes:
    body: dict[str, object] = {
        "op": "register",
        "ip": "198.18.0.12",
        "networks": None,
        "mesos_bridge": True,
        "docker_bridge": True,
    }
    body.update(changes)
    return packed({k: v for k, v in body.items() if v is not ...})


BAD_ENTRIES = [
    (b"\xc1", "entry is not msgpack (", "bad_command"),
    (b"\x92\x01", "entry is not msgpack (", "bad_command"),
    (packed([1, 2]), "entry: expected a map with a string 'op', got list", "bad_command"),
    (packed({"op": "frob"}), "entry: unknown command 'frob'", "bad_command"),
    (
        Allocator.register_command("1.2.3", None),
        "register: agent ip '1.2.3' is not an IPv4 address",
        "bad_command",
    ),
    (
        Allocator.register_command("fd01::1", None),
        "register: agent ip 'fd01::1' is not an IPv4 address",
        "bad_command",
    ),
    (register_body(ip=11), "register: agent ip must be a string, got int", "bad_command"),
    (
        Allocator.register_command("198.18.0.12", ["foo"]),
        "register: unknown network 'foo' (known: dcos, dcos6)",
        "unknown_network",
    ),
    (
        Allocator.register_command("198.18.0.12", ["foo", "dcos", "bar", "foo"]),
        "register: unknown networks 'foo', 'bar' (known: dcos, dcos6)",
        "unknown_network",
    ),
    (register_body(networks=...), "register: missing key 'networks'", "bad_command"),
    (register_body(extra=1), "register: unknown key 'extra'", "bad_command"),
    (register_body(networks="dcos"), "register: networks must be a list of strings", "bad_command"),
    (register_body(networks=[1]), "register: networks must be a list of strings", "bad_command"),
    (
        register_body(mesos_bridge=1),
        "register: mesos_bridge and docker_bridge must be booleans",
        "bad_command",
    ),
    (
        Allocator.delete_command(["198.18.0.11", "nope"]),
        "delete: agent ip 'nope' is not an IPv4 address",
        "bad_command",
    ),
    (packed({"op": "delete", "ips": "198.18.0.11"}), "delete: ips must be a list", "bad_command"),
    (
        packed({"op": "network", "network": None}),
        "network: invalid configuration: not a network configuration (",
        "bad_command",
    ),
    (
        packed({"op": "network", "network": {"vni": 7, "colour": "blue"}}),
        "network: invalid configuration: network.colour: unknown key",
        "bad_command",
    ),
]


@pytest.mark.parametrize(("entry", "error", "kind"), BAD_ENTRIES)
def test_bad_entries_are_refused_and_counted(entry: bytes, error: str, kind: str) -> None:
    allocator = Allocator(TWO)
    register(allocator, "198.18.0.11")
    snapshot = allocator.snapshot()
    outcome = allocator.apply(entry)
    assert not outcome.ok
    assert not outcome.changed
    assert outcome.agent is None
    assert outcome.error is not None
    assert outcome.error.startswith(error)
    assert allocator.failures == {
        "subnet_exhausted": 0,
        "vtep_exhausted": 0,
        "bad_command": 0,
        "unknown_network": 0,
        kind: 1,
    }
    allocator.failures[kind] = 0
    assert allocator.snapshot() == snapshot


def test_encoders_refuse_a_string_for_a_list() -> None:
    with pytest.raises(TypeError, match="networks must be a sequence"):
        Allocator.register_command("198.18.0.11", "dcos")
    with pytest.raises(TypeError, match="ips must be a sequence"):
        Allocator.delete_command("198.18.0.11")


def test_agent_info_of_a_bad_address_is_none() -> None:
    assert Allocator(DEFAULT).agent_info("198.18.0") is None


# --- snapshots ------------------------------------------------------------------------------------


def busy_allocator() -> Allocator:
    allocator = Allocator(
        NetworkConfig(overlays=(Overlay("small", subnet=IPv4Network("10.0.0.0/22")), DCOS, DCOS6))
    )
    for i, ip in enumerate(agent_ips(8)):
        register(allocator, ip, None if i % 3 else ["small", "dcos"], mesos_bridge=i % 2 == 0)
    allocator.apply(Allocator.delete_command(["198.18.0.12", "198.18.0.14"]))
    register(allocator, "198.18.0.30", ["dcos6"])
    allocator.apply(b"junk")
    return allocator


def test_restore_gives_back_the_same_state_and_allocates_identically() -> None:
    live = busy_allocator()
    data = live.snapshot()
    restored = Allocator.restore(data)
    assert restored.state() == live.state()
    assert restored.snapshot() == data
    assert restored.free_counts() == live.free_counts()
    assert (restored.registrations, restored.failures) == (live.registrations, live.failures)
    for ip in ("198.18.0.31", "198.18.0.12", "198.18.0.40", "198.18.0.11"):
        assert register(restored, ip) == register(live, ip)
    assert restored.snapshot() == live.snapshot()


def test_restore_reserves_every_agents_vtep_ip6_again() -> None:
    live = Allocator(TWO)
    for ip in agent_ips(3):
        register(live, ip, ["dcos"])
        register(live, ip, ["dcos6"])
    restored = Allocator.restore(live.snapshot())
    backend = agent_of(register(restored, "198.18.0.20"))["overlays"][0]["backend"]["vxlan"]
    assert backend["vtep_ip6"] == "fd01:a::4/64"
    assert restored.free_counts()["vtep"]["used6"] == 4


@pytest.mark.parametrize(
    "data",
    [
        b"junk",
        packed({"format": "something-else"}),
        packed({"format": "vxnet-allocator", "version": 2}),
    ],
)
def test_restore_refuses_what_is_not_a_snapshot(data: bytes) -> None:
    with pytest.raises(ValueError, match="not an allocator snapshot"):
        Allocator.restore(data)


def test_restore_refuses_a_subnet_held_twice() -> None:
    live = Allocator(DEFAULT)
    register(live, "198.18.0.11")
    register(live, "198.18.0.12")
    body = msgpack.unpackb(live.snapshot())
    body["agents"][1]["overlays"][0][1] = 0
    with pytest.raises(ValueError, match="held twice"):
        Allocator.restore(packed(body))


# --- scale ----------------------------------------------------------------------------------------


def test_ten_thousand_registrations_get_distinct_subnets_lowest_first() -> None:
    allocator = Allocator(replace(DEFAULT, vtep_subnet=IPv4Network("44.128.0.0/16")))
    ips = agent_ips(10_000, "10.0.0.0")
    for k, ip in enumerate(ips):
        overlay = agent_of(register(allocator, ip))["overlays"][0]
        assert overlay["subnet"] == f"9.{k >> 8}.{k & 255}.0/24"
        vtep = k + 1
        assert overlay["backend"]["vxlan"]["vtep_ip"] == f"44.128.{vtep >> 8}.{vtep & 255}/16"
    last = info_json(allocator.agent_info(ips[-1]))
    assert last is not None
    assert last["overlays"][0]["subnet"] == "9.39.15.0/24"
    assert allocator.free_counts()["dcos"] == {"total": 65536, "used": 10_000, "free": 55_536}
    allocator.apply(Allocator.delete_command([ips[7000], ips[300]]))
    assert agent_of(register(allocator, "198.18.0.1"))["overlays"][0]["subnet"] == "9.1.44.0/24"
    assert agent_of(register(allocator, "198.18.0.2"))["overlays"][0]["subnet"] == "9.27.88.0/24"
    assert agent_of(register(allocator, "198.18.0.3"))["overlays"][0]["subnet"] == "9.39.16.0/24"
    assert Allocator.restore(allocator.snapshot()).state() == allocator.state()


# --- the state machine against a brute-force model ------------------------------------------------

# Small pools, so that every kind of exhaustion happens within a few steps: 6 VTEP addresses for
# 8 agent IPs, 3 VTEP IPv6 addresses, 2 subnets in a (dual stack), 4 in b (8 once widened), 2 in
# c (IPv6 only; added and removed by the machine).
M_VTEP = IPv4Network("44.128.0.0/29")
M_VTEP6 = IPv6Network("fd00:ff::/126")
M_A = Overlay("a", IPv4Network("10.0.0.0/27"), 28, IPv6Network("fd00:1::/120"), 124)
M_B = Overlay("b", IPv4Network("10.1.0.0/27"), 29)
M_B_WIDE = Overlay("b", IPv4Network("10.1.0.0/26"), 29)
M_C = Overlay("c", subnet6=IPv6Network("fd00:2::/123"), prefix6=124)
M_NETWORK = NetworkConfig(vtep_subnet=M_VTEP, vtep_subnet6=M_VTEP6, overlays=(M_A, M_B))
M_IPS = [f"198.18.0.{i}" for i in range(1, 9)]


@dataclass
class Held:
    sub4: IPv4Network | None
    sub6: IPv6Network | None
    mesos: bool
    docker: bool
    error: str | None = None


@dataclass
class ModelAgent:
    vtep: IPv4Address
    vtep6: IPv6Address | None
    nets: dict[str, Held] = field(default_factory=dict)


@dataclass
class Expected:
    error: str | None
    changed: bool
    existed: bool


class Model:
    """The allocator's rules, written plainly: lowest free is a search over every candidate."""

    def __init__(self, network: NetworkConfig) -> None:
        self.network = network
        self.agents: dict[str, ModelAgent] = {}
        self.registrations = 0
        self.failures = dict.fromkeys(
            ("subnet_exhausted", "vtep_exhausted", "bad_command", "unknown_network"), 0
        )

    def overlay(self, name: str) -> Overlay:
        return next(o for o in self.network.overlays if o.name == name)

    def subnets4(self, o: Overlay) -> list[IPv4Network]:
        return [] if o.subnet is None else list(o.subnet.subnets(new_prefix=o.prefix))

    def subnets6(self, o: Overlay) -> list[IPv6Network]:
        return [] if o.subnet6 is None else list(o.subnet6.subnets(new_prefix=o.prefix6))

    def used4(self, name: str) -> set[IPv4Network]:
        held = [a.nets.get(name) for a in self.agents.values()]
        return {h.sub4 for h in held if h is not None and h.sub4 is not None}

    def used6(self, name: str) -> set[IPv6Network]:
        held = [a.nets.get(name) for a in self.agents.values()]
        return {h.sub6 for h in held if h is not None and h.sub6 is not None}

    def vteps(self) -> list[IPv4Address]:
        return list(self.network.vtep_subnet.hosts())

    def vteps6(self) -> list[IPv6Address]:
        net = self.network.vtep_subnet6
        return [net[i] for i in range(1, net.num_addresses)]

    def register(self, ip: str, networks: list[str] | None, mesos: bool, docker: bool) -> Expected:
        old = self.agents.get(ip)
        names = [o.name for o in self.network.overlays]
        if networks is not None:
            unknown = list(dict.fromkeys(n for n in networks if n not in names))
            if unknown:
                self.failures["unknown_network"] += 1
                s = "s" if len(unknown) > 1 else ""
                listed = ", ".join(repr(n) for n in unknown)
                error = f"register: unknown network{s} {listed} (known: {', '.join(names)})"
                return Expected(error, False, old is not None)
        if old is None:
            free = [v for v in self.vteps() if v not in {a.vtep for a in self.agents.values()}]
            if not free:
                self.failures["vtep_exhausted"] += 1
                total = len(self.vteps())
                return Expected(
                    f"vtep_subnet {self.network.vtep_subnet}: no free VTEP address left "
                    f"({total} of {total} in use)",
                    False,
                    False,
                )
            new = ModelAgent(free[0], None)
        else:
            new = copy.deepcopy(old)
        exhausted = 0
        for o in self.network.overlays:
            held = new.nets.get(o.name)
            asked = networks is None or o.name in networks
            if held is None and not asked:
                continue
            m, d = (mesos, docker) if asked or held is None else (held.mesos, held.docker)
            if held is not None and held.error is None:
                held.mesos, held.docker = m, d
                continue
            all4, used4 = self.subnets4(o), self.used4(o.name)
            all6, used6 = self.subnets6(o), self.used6(o.name)
            free4 = [s for s in all4 if s not in used4]
            free6 = [s for s in all6 if s not in used6]
            failure: str | None = None
            if all4 and not free4:
                n = len(all4)
                failure = f"{o.name}: no free /{o.prefix} subnet left ({n} of {n} in use)"
            elif all6 and not free6:
                n = len(all6)
                failure = f"{o.name}: no free /{o.prefix6} subnet left ({n} of {n} in use)"
            if failure is None:
                new.nets[o.name] = Held(
                    free4[0] if all4 else None, free6[0] if all6 else None, m, d
                )
            else:
                exhausted += 1
                new.nets[o.name] = Held(None, None, m, d, failure)
        if new.vtep6 is None and any(h.sub6 is not None for h in new.nets.values()):
            taken = {a.vtep6 for a in self.agents.values()}
            free_vteps6 = [v for v in self.vteps6() if v not in taken]
            if not free_vteps6:
                self.failures["vtep_exhausted"] += 1
                total = len(self.vteps6())
                return Expected(
                    f"vtep_subnet6 {self.network.vtep_subnet6}: no free VTEP address left "
                    f"({total} of {total} in use)",
                    False,
                    old is not None,
                )
            new.vtep6 = free_vteps6[0]
        self.failures["subnet_exhausted"] += exhausted
        changed = new != old
        if changed:
            self.agents[ip] = new
            self.registrations += 1
        return Expected(None, changed, old is not None)

    def delete(self, ips: list[str]) -> bool:
        return bool([self.agents.pop(ip) for ip in set(ips) if ip in self.agents])

    def holders(self, name: str) -> list[str]:
        return sorted(
            (ip for ip, a in self.agents.items() if (h := a.nets.get(name)) and h.error is None),
            key=IPv4Address,
        )

    def change(self, new: NetworkConfig) -> list[str]:
        problems = []
        for o in self.network.overlays:
            holders = ", ".join(self.holders(o.name))
            replacement = next((n for n in new.overlays if n.name == o.name), None)
            if not holders or replacement == o:
                continue
            users = f"agents {holders} hold subnets in it"
            if replacement is None:
                problems.append(f"network {o.name}: removed but {users}")
            else:
                problems.append(
                    f"network {o.name}: subnet changes from {o.subnet} to {replacement.subnet} "
                    f"but {users}"
                )
        if not problems:
            self.network = new
            names = {o.name for o in new.overlays}
            for agent in self.agents.values():
                agent.nets = {n: h for n, h in agent.nets.items() if n in names}
        return problems

    def render(self, ip: str) -> dict[str, Any]:
        agent, network = self.agents[ip], self.network
        oui = bytes.fromhex(network.vtep_mac_oui.replace(":", ""))[:3]
        backend: dict[str, Any] = {
            "vni": network.vni,
            "vtep_name": f"vtep{network.vni}",
            "vtep_ip": f"{agent.vtep}/{network.vtep_subnet.prefixlen}",
            "vtep_mac": ":".join(f"{b:02x}" for b in oui + agent.vtep.packed[1:]),
            "vxlan_port": network.vxlan_port,
            "vtep_mtu": network.vtep_mtu,
        }
        if agent.vtep6 is not None:
            backend["vtep_ip6"] = f"{agent.vtep6}/{network.vtep_subnet6.prefixlen}"
        overlays = []
        for o in network.overlays:
            held = agent.nets.get(o.name)
            if held is None:
                continue
            info: dict[str, Any] = {"name": o.name}
            if o.subnet is not None:
                info.update(subnet=str(o.subnet), prefix=o.prefix)
            if o.subnet6 is not None:
                info.update(subnet6=str(o.subnet6), prefix6=o.prefix6)
            if held.error is not None:
                overlays.append(
                    {"info": info, "state": {"status": "STATUS_FAILED", "error": held.error}}
                )
                continue
            entry: dict[str, Any] = {"info": info}
            mesos: dict[str, Any] = {"name": f"m-{o.name}", "mtu": network.overlay_mtu}
            docker: dict[str, Any] = {"name": f"d-{o.name}", "mtu": network.overlay_mtu}
            for sub, key in ((held.sub4, "ip"), (held.sub6, "ip6")):
                if sub is None:
                    continue
                entry["subnet" if key == "ip" else "subnet6"] = str(sub)
                first, second = sub.subnets(prefixlen_diff=1)
                mesos[key] = f"{first[1]}/{first.prefixlen}"
                docker[key] = f"{second[1]}/{second.prefixlen}"
            if held.mesos:
                entry["mesos_bridge"] = mesos
            if held.docker:
                entry["docker_bridge"] = docker
            entry["backend"] = {"vxlan": dict(backend)}
            entry["state"] = {"status": "STATUS_OK"}
            overlays.append(entry)
        return {"ip": ip, "overlays": overlays}

    def free_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for o in self.network.overlays:
            entry: dict[str, int] = {}
            if o.subnet is not None:
                total, used = len(self.subnets4(o)), len(self.used4(o.name))
                entry.update(total=total, used=used, free=total - used)
            if o.subnet6 is not None:
                total, used = len(self.subnets6(o)), len(self.used6(o.name))
                entry.update(total6=total, used6=used, free6=total - used)
            counts[o.name] = entry
        vtep6 = sum(a.vtep6 is not None for a in self.agents.values())
        counts["vtep"] = {
            "total": len(self.vteps()),
            "used": len(self.agents),
            "free": len(self.vteps()) - len(self.agents),
            "total6": len(self.vteps6()),
            "used6": vtep6,
            "free6": len(self.vteps6()) - vtep6,
        }
        return counts


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.allocator = Allocator(M_NETWORK)
        self.model = Model(M_NETWORK)
        self.log: list[bytes] = []

    def apply(self, entry: bytes) -> Outcome:
        self.log.append(entry)
        return self.allocator.apply(entry)

    @rule(ip=st.sampled_from(M_IPS), mesos=st.booleans(), docker=st.booleans())
    def register_for_all_networks(self, ip: str, mesos: bool, docker: bool) -> None:
        self.register(ip, None, mesos, docker)

    @rule(
        ip=st.sampled_from(M_IPS),
        networks=st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3),
        mesos=st.booleans(),
        docker=st.booleans(),
    )
    def register(self, ip: str, networks: list[str] | None, mesos: bool, docker: bool) -> None:
        free_before = self.model.free_counts()
        satisfied = self.allocator.satisfied(ip, networks, mesos, docker)
        expected = self.model.register(ip, networks, mesos, docker)
        outcome = self.apply(Allocator.register_command(ip, networks, mesos, docker))
        assert outcome.error == expected.error
        assert outcome.ok == (expected.error is None)
        assert outcome.changed == expected.changed
        assert satisfied == (expected.existed and expected.error is None and not expected.changed)
        if outcome.ok:
            assert outcome.agent is not None
            assert outcome.agent.to_json() == self.model.render(ip)
            for overlay in outcome.agent.to_json()["overlays"]:
                counts = free_before[overlay["info"]["name"]]
                if overlay["state"]["status"] == "STATUS_FAILED":
                    assert counts.get("free", 1) == 0 or counts.get("free6", 1) == 0

    @rule(ips=st.lists(st.sampled_from([*M_IPS, "203.0.113.1"]), min_size=1, max_size=3))
    def delete(self, ips: list[str]) -> None:
        changed = self.model.delete(ips)
        assert self.apply(Allocator.delete_command(ips)) == Outcome(ok=True, changed=changed)

    def replace_network(self, overlays: tuple[Overlay, ...]) -> None:
        new = replace(self.allocator.network, overlays=overlays)
        before = self.allocator.state()
        problems = self.model.change(new)
        assert self.allocator.network_change_problems(new) == problems
        outcome = self.apply(Allocator.network_command(new))
        assert outcome.ok == (not problems)
        if problems:
            assert outcome.error == "; ".join(problems)
            assert self.allocator.state() == before
        else:
            assert self.allocator.network == new

    @rule(which=st.sampled_from(["add or remove c", "widen or narrow b"]))
    def change_network(self, which: str) -> None:
        overlays = self.allocator.network.overlays
        if which == "add or remove c":
            has_c = any(o.name == "c" for o in overlays)
            new = tuple(o for o in overlays if o.name != "c") if has_c else (*overlays, M_C)
        else:
            new = tuple(
                (M_B if o == M_B_WIDE else M_B_WIDE) if o.name == "b" else o for o in overlays
            )
        self.replace_network(new)

    @rule()
    def snapshot_and_restore(self) -> None:
        data = self.allocator.snapshot()
        restored = Allocator.restore(data)
        assert restored.state() == self.allocator.state()
        assert restored.snapshot() == data
        self.allocator = restored

    @rule()
    def rebuild_from_the_log(self) -> None:
        rebuilt = Allocator(M_NETWORK)
        for entry in self.log:
            rebuilt.apply(entry)
        assert rebuilt.state() == self.allocator.state()
        assert rebuilt.snapshot() == self.allocator.snapshot()

    @invariant()
    def agrees_with_the_model(self) -> None:
        state = self.allocator.state()
        assert state["network"] == network_json(self.model.network)
        assert [a["ip"] for a in state["agents"]] == sorted(self.model.agents, key=IPv4Address)
        for info in state["agents"]:
            assert info == self.model.render(info["ip"])
        assert self.allocator.free_counts() == self.model.free_counts()
        assert self.allocator.registrations == self.model.registrations
        assert self.allocator.failures == self.model.failures

    @invariant()
    def the_encoded_state_is_the_state(self) -> None:
        # state_json reuses each agent's JSON until the agent (or the network) changes: any
        # stale piece shows here, after every kind of step.
        state = {**self.allocator.state(), "free": self.allocator.free_counts()}
        assert json.loads(self.allocator.state_json(free=True)) == state
        assert json.loads(self.allocator.state_json()) == self.allocator.state()

    @invariant()
    def nothing_is_held_twice(self) -> None:
        subnets: dict[str, list[IPv4Network | IPv6Network]] = {}
        vteps, macs, vteps6 = [], [], []
        for info in self.allocator.state()["agents"]:
            backend = None
            for overlay in info["overlays"]:
                name = overlay["info"]["name"]
                for key in ("subnet", "subnet6"):
                    if key in overlay:
                        net = (
                            IPv4Network(overlay[key])
                            if key == "subnet"
                            else IPv6Network(overlay[key])
                        )
                        subnets.setdefault(name + key, []).append(net)
                if "subnet6" in overlay:
                    assert "vtep_ip6" in overlay["backend"]["vxlan"]
                backend = overlay.get("backend", backend)
            if backend is not None:
                vteps.append(backend["vxlan"]["vtep_ip"])
                macs.append(backend["vxlan"]["vtep_mac"])
                vteps6.append(backend["vxlan"].get("vtep_ip6"))
        for nets in subnets.values():
            assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
        assert len(set(vteps)) == len(vteps)
        assert len(set(macs)) == len(macs)
        given6 = [v for v in vteps6 if v is not None]
        assert len(set(given6)) == len(given6)


AllocatorMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAllocatorMachine = AllocatorMachine.TestCase


def test_the_encoded_state_reencodes_only_the_agents_that_changed() -> None:
    allocator = Allocator(DEFAULT)
    for ip in agent_ips(3):
        register(allocator, ip)
    first = allocator.state_json()
    kept = dict(allocator._encoded)
    register(allocator, "198.18.0.12", mesos_bridge=False)
    allocator.apply(Allocator.delete_command(["198.18.0.13"]))
    second = allocator.state_json()
    assert first != second
    assert json.loads(second) == allocator.state()
    again = allocator._encoded
    assert sorted(again) == [int(IPv4Address("198.18.0.11")), int(IPv4Address("198.18.0.12"))]
    eleven = int(IPv4Address("198.18.0.11"))
    assert again[eleven] is kept[eleven]  # the unchanged agent's JSON was reused
    twelve = int(IPv4Address("198.18.0.12"))
    assert again[twelve] is not kept[twelve]
    assert allocator.agent_count == 2


@pytest.mark.parametrize(
    ("ip", "what"),
    [
        ("0.0.0.0", "an unspecified address"),
        ("0.255.255.255", "an unspecified address"),
        ("127.0.0.1", "a loopback address"),
        ("127.255.255.254", "a loopback address"),
        ("169.254.0.1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.255", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "the broadcast address"),
    ],
)
def test_addresses_no_host_can_be_reached_at_are_not_agents(ip: str, what: str) -> None:
    assert agent_address_problem(ip) == f"{ip!r} cannot be an agent's address: it is {what}"


@pytest.mark.parametrize(
    "ip",
    [
        "1.0.0.0",
        "10.0.0.1",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "223.255.255.255",
        "198.18.0.11",
    ],
)
def test_host_addresses_can_be_agents(ip: str) -> None:
    assert agent_address_problem(ip) is None
    assert agent_address_problem("not an address") is None  # refused as such when applied
