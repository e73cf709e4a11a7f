"""The typed records: codec round trips, unknown fields, refused shapes and the one status rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vxnet.records import (
    AgentInfo,
    AgentOverlay,
    HalfUsage,
    OverlayInfo,
    OverlayRecord,
    Port,
    RecordError,
    State,
    Status,
    TaskRecord,
    UsageRecord,
)

AGENT: dict[str, Any] = {
    "ip": "198.18.0.11",
    "overlays": [
        {
            "info": {"name": "dcos", "subnet": "9.0.0.0/8", "prefix": 24},
            "subnet": "9.0.3.0/24",
            "subnet6": "fd01:b:0:0:3::/80",
            "mesos_bridge": {"name": "m-dcos", "mtu": 1420, "ip": "9.0.3.1/25"},
            "docker_bridge": {"name": "d-dcos", "mtu": 1420, "ip": "9.0.3.129/25"},
            "backend": {
                "vxlan": {
                    "vni": 1024,
                    "vtep_name": "vtep1024",
                    "vtep_ip": "44.128.0.4/20",
                    "vtep_mac": "70:B3:D5:80:00:04",
                    "vxlan_port": 64000,
                    "vtep_mtu": 1500,
                    "vtep_ip6": "fd01:a::4/64",
                }
            },
            "state": {"status": "STATUS_OK"},
        },
        {
            "info": {"name": "tiny", "subnet": "10.0.0.0/24", "prefix": 25},
            "state": {"status": "STATUS_FAILED", "error": "no free /25 subnet left"},
        },
    ],
}
TASK: dict[str, Any] = {
    "name": "web",
    "framework": "marathon",
    "network": "dcos",
    "agent_ip": "198.18.0.11",
    "runtime": "cni",
    "ports_mapped": True,
    "container_id": "c1",
    "ports": [{"name": "http", "port": 80, "protocol": "tcp"}],
    "ip": "9.0.3.2",
    "ip6": "fd01:b::3:0:0:2",
}
USAGE: dict[str, Any] = {
    "networks": {
        "dcos": {
            "cni": {"total": 125, "allocated": 2, "free": 123},
            "docker": {"total": 125, "allocated": 0, "free": 125, "total6": 9, "allocated6": 1},
        }
    }
}


def test_agent_info_round_trips_and_keeps_dcos_field_names() -> None:
    info = AgentInfo.from_json(AGENT)
    assert info.to_json() == AGENT
    assert AgentInfo.from_json(info.to_json()) == info
    dcos, tiny = info.overlays
    assert dcos.name == "dcos"
    assert dcos.backend is not None
    assert dcos.backend.vtep_ip == "44.128.0.4/20"
    assert dcos.subnets() == ("9.0.3.0/24", "fd01:b:0:0:3::/80")
    assert tiny.state == State(Status.FAILED, "no free /25 subnet left")
    assert info.vxlan() is dcos.backend


def test_one_status_rule_only_ok_entries_are_usable() -> None:
    entries = [
        {"info": {"name": "a"}, "state": {"status": status}}
        for status in ("STATUS_OK", "STATUS_FAILED", "STATUS_CONFIGURING", "STATUS_INVALID")
    ]
    entries.append({"info": {"name": "no-state"}})
    entries.append({"info": {"name": "newer"}, "state": {"status": "STATUS_DEGRADED"}})
    info = AgentInfo.from_json({"ip": "198.18.0.1", "overlays": entries})
    assert [o.ok for o in info.overlays] == [True, False, False, False, False, False]
    assert [o.state.status for o in info.overlays] == [
        Status.OK,
        Status.FAILED,
        Status.CONFIGURING,
        Status.INVALID,
        Status.INVALID,
        Status.INVALID,
    ]
    assert [o.name for o in info.usable()] == ["a"]
    assert str(Status.OK) == "STATUS_OK"
    assert Status("STATUS_FAILED") is Status.FAILED
    assert [s.label for s in Status] == ["INVALID", "OK", "FAILED", "CONFIGURING"]


def test_unknown_fields_from_a_newer_version_are_ignored() -> None:
    newer = copy.deepcopy(AGENT)
    newer["schema"] = 2
    newer["overlays"][0]["qos"] = {"class": "gold"}
    newer["overlays"][0]["backend"]["geneve"] = {"vni": 7}
    newer["overlays"][0]["backend"]["vxlan"]["flags"] = ["gbp"]
    newer["overlays"][0]["mesos_bridge"]["vlan"] = 3
    newer["overlays"][0]["info"]["labels"] = {}
    newer["overlays"][0]["state"]["since"] = "2026-12-01"
    assert AgentInfo.from_json(newer) == AgentInfo.from_json(AGENT)
    task = TaskRecord.from_json({**TASK, "health": "ok", "ports": [{**TASK["ports"][0], "x": 1}]})
    assert task == TaskRecord.from_json(TASK)
    usage = copy.deepcopy(USAGE)
    usage["generated"] = 5
    usage["networks"]["dcos"]["cni"]["reserved"] = 1
    assert UsageRecord.from_json(usage) == UsageRecord.from_json(USAGE)
    record = OverlayRecord.of_agent(AgentInfo.from_json(AGENT)).to_json()
    assert OverlayRecord.from_json({**record, "mtu": 1450}, "overlay/198.18.0.11").agent_ip == (
        "198.18.0.11"
    )


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("ip",), None, r"^ip: missing$"),
        (("ip",), 7, r"^ip: expected a string, got 7$"),
        (("overlays",), {}, r"^overlays: expected a list"),
        (("overlays", 0), "dcos", r"^overlays\[0\]: expected an object, got str$"),
        (("overlays", 0, "info"), None, r"^overlays\[0\]\.info: missing$"),
        (("overlays", 0, "info", "prefix"), "24", r"^overlays\[0\]\.info\.prefix: expected an"),
        (("overlays", 0, "info", "prefix"), True, r"^overlays\[0\]\.info\.prefix: expected an"),
        (("overlays", 0, "state"), "ok", r"^overlays\[0\]\.state: expected an object"),
        (("overlays", 0, "state", "status"), 1, r"^overlays\[0\]\.state\.status: expected a"),
        (("overlays", 0, "backend", "vxlan", "vni"), "x", r"backend\.vxlan\.vni: expected an"),
        (("overlays", 0, "backend", "vxlan", "vtep_mac"), None, r"vxlan\.vtep_mac: missing$"),
        (("overlays", 0, "mesos_bridge", "name"), None, r"mesos_bridge\.name: missing$"),
    ],
)
def test_bad_agent_info_shapes_are_refused_naming_the_field(
    path: tuple[str | int, ...], value: object, message: str
) -> None:
    bad = copy.deepcopy(AGENT)
    target: Any = bad
    for step in path[:-1]:
        target = target[step]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(RecordError, match=message):
        AgentInfo.from_json(bad)


def test_a_record_error_is_a_value_error_and_non_objects_are_refused() -> None:
    assert issubclass(RecordError, ValueError)
    with pytest.raises(RecordError, match="AgentInfo: expected an object, got list"):
        AgentInfo.from_json([])
    with pytest.raises(RecordError, match="a task record is an object, not str"):
        TaskRecord.from_json("web")
    with pytest.raises(RecordError, match=r"usage/: expected an object, got null"):
        UsageRecord.from_json(None)


def test_parts_round_trip() -> None:
    overlay = AgentOverlay.from_json(AGENT["overlays"][1])
    assert overlay.to_json() == AGENT["overlays"][1]
    assert overlay.subnets() == ()
    info = OverlayInfo("dcos6", subnet6="fd01:b::/64", prefix6=80, enabled=False)
    assert OverlayInfo.from_json(info.to_json()) == info
    assert info.to_json() == {
        "name": "dcos6",
        "subnet6": "fd01:b::/64",
        "prefix6": 80,
        "enabled": False,
    }


def test_task_record_round_trips_and_canonicalizes_addresses() -> None:
    task = TaskRecord.from_json(TASK)
    assert task.to_json() == TASK
    assert task.ports == (Port("http", 80, "tcp"),)
    spelled = TaskRecord.from_json({**TASK, "ip6": "fd01:b:0:0:3:0:0:2"})
    assert spelled.ip6 == "fd01:b::3:0:0:2"
    minimal = TaskRecord("a", "b", "10.0.0.1")
    assert minimal.to_json() == {"name": "a", "framework": "b", "agent_ip": "10.0.0.1"} | {
        "ports_mapped": False
    }
    assert TaskRecord.from_json(minimal.to_json()) == minimal
    assert TaskRecord.key_of("198.18.0.11", "c1") == "tasks/198.18.0.11/c1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ""}, "^name: a non-empty string"),
        ({"agent_ip": "9.0.0"}, "^agent_ip: an IPv4 address"),
        ({"ip": "fd01::1"}, "^ip: an IPv4 address"),
        ({"network": 3}, "^network: a string"),
        ({"ports_mapped": "yes"}, "^ports_mapped: true or false"),
        ({"ports": [{"port": 0}]}, r"^ports\[0\]\.port: a number from 1 to 65535"),
        ({"ports": [{"port": 53, "protocol": "sctp"}]}, r"^ports\[0\]\.protocol: 'tcp' or"),
    ],
)
def test_bad_task_records_are_refused_naming_the_field(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(RecordError, match=message):
        TaskRecord.from_json({**TASK, **change})


def test_usage_record_round_trips_and_lists_its_families() -> None:
    usage = UsageRecord.from_json(USAGE)
    assert usage.to_json() == USAGE
    docker = usage.networks["dcos"]["docker"]
    assert docker == HalfUsage(125, 0, 125, 9, 1, None)
    assert docker.families() == (("", 125, 0, 125), ("6", 9, 1, 0))
    with pytest.raises(RecordError, match=r"usage/\.networks\.dcos\.cni\.free: expected an"):
        UsageRecord.from_json({"networks": {"dcos": {"cni": {"free": "many"}}}})


def test_the_overlay_record_of_an_agent_uses_its_ok_entries_only() -> None:
    record = OverlayRecord.of_agent(AgentInfo.from_json(AGENT))
    assert record.to_json() == {
        "agent_ip": "198.18.0.11",
        "vtep_ip": "44.128.0.4",
        "vtep_mac": "70:b3:d5:80:00:04",
        "vtep_ip6": "fd01:a::4",
        "subnets": ["9.0.3.0/24", "fd01:b:0:0:3::/80"],
        "networks": {"dcos": {"subnet": "9.0.3.0/24", "subnet6": "fd01:b:0:0:3::/80"}},
    }
    assert record.key == "overlay/198.18.0.11"
    assert OverlayRecord.from_json(record.to_json(), record.key) == record
    configuring = copy.deepcopy(AGENT)
    configuring["overlays"][0]["state"]["status"] = "STATUS_CONFIGURING"
    with pytest.raises(RecordError, match=r"198\.18\.0\.11: no network was allocated"):
        OverlayRecord.of_agent(AgentInfo.from_json(configuring))


def test_an_overlay_record_is_checked_against_its_key_when_given_one() -> None:
    record = OverlayRecord.of_agent(AgentInfo.from_json(AGENT)).to_json()
    assert OverlayRecord.from_json(record).agent_ip == "198.18.0.11"
    with pytest.raises(RecordError, match=r"^overlay/198\.18\.0\.12: names agent 198\.18\.0\.11"):
        OverlayRecord.from_json(record, "overlay/198.18.0.12")
    with pytest.raises(RecordError, match=r"^overlay record: missing vtep_ip$"):
        OverlayRecord.from_json({k: v for k, v in record.items() if k != "vtep_ip"})
    with pytest.raises(RecordError, match=r"^overlay record: expected an object, got list$"):
        OverlayRecord.from_json([])
