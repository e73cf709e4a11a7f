"""Overlay records: what an agent publishes, and how the others read it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from vxnet.overlay._model import RemoteAgent
from vxnet.overlay._records import RecordError, overlay_record, remote_from_record
from vxnet.records import AgentInfo

AGENT_INFO: dict[str, Any] = {
    "ip": "198.18.0.11",
    "overlays": [
        {
            "info": {"name": "dcos", "subnet": "9.0.0.0/8", "prefix": 24},
            "subnet": "9.0.3.0/24",
            "backend": {
                "vxlan": {
                    "vni": 1024,
                    "vtep_name": "vtep1024",
                    "vtep_ip": "44.128.0.4/20",
                    "vtep_mac": "70:B3:D5:80:00:04",
                    "vtep_ip6": "fd01:a:0:0::4/64",
                }
            },
            "state": {"status": "STATUS_OK"},
        },
        {
            "info": {"name": "dcos6", "subnet6": "fd01:b::/64", "prefix6": 80},
            "subnet6": "fd01:b:0:0:3::/80",
            "backend": {"vxlan": {"vtep_ip": "44.128.0.4/20", "vtep_mac": "70:b3:d5:80:00:04"}},
            "state": {"status": "STATUS_OK"},
        },
        {"info": {"name": "full", "subnet": "10.0.0.0/24"}, "state": {"status": "STATUS_FAILED"}},
    ],
}


def test_the_published_record_and_the_remote_read_back_agree() -> None:
    record = overlay_record(AgentInfo.from_json(AGENT_INFO))
    assert record == {
        "agent_ip": "198.18.0.11",
        "vtep_ip": "44.128.0.4",
        "vtep_mac": "70:b3:d5:80:00:04",
        "vtep_ip6": "fd01:a::4",
        "subnets": ["9.0.3.0/24", "fd01:b:0:0:3::/80"],
        "networks": {"dcos": {"subnet": "9.0.3.0/24"}, "dcos6": {"subnet6": "fd01:b:0:0:3::/80"}},
    }
    assert remote_from_record("overlay/198.18.0.11", record) == RemoteAgent(
        ip="198.18.0.11",
        vtep_ip="44.128.0.4",
        vtep_mac="70:b3:d5:80:00:04",
        vtep_ip6="fd01:a::4",
        subnets=("9.0.3.0/24", "fd01:b:0:0:3::/80"),
    )


def test_an_agent_without_any_network_has_no_record() -> None:
    failed = {"ip": "198.18.0.12", "overlays": [AGENT_INFO["overlays"][2]]}
    with pytest.raises(RecordError, match=r"198\.18\.0\.12: no network was allocated"):
        overlay_record(AgentInfo.from_json(failed))


GOOD = overlay_record(AgentInfo.from_json(AGENT_INFO))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"agent_ip": None}, "overlay/198.18.0.11: missing agent_ip"),
        ({"vtep_ip": "44.128.0"}, "overlay/198.18.0.11: Expected 4 octets"),
        ({"vtep_mac": "70:b3:d5:80:00"}, "vtep_mac '70:b3:d5:80:00' is not a MAC address"),
        ({"vtep_mac": "zz:b3:d5:80:00:04"}, "overlay/198.18.0.11: invalid literal"),
        ({"vtep_ip6": None}, "IPv6 subnet fd01:b:0:0:3::/80 but no vtep_ip6"),
        ({"subnets": ["9.0.3.1/24"]}, "has host bits set"),
        ({"agent_ip": "198.18.0.12"}, "names agent 198.18.0.12, not the agent of its key"),
    ],
)
def test_a_record_that_does_not_fit_is_refused_with_the_reason(
    change: dict[str, Any], error: str
) -> None:
    record = {**GOOD, **change}
    record = {k: v for k, v in record.items() if v is not None}
    with pytest.raises(RecordError, match=re.escape(error)):
        remote_from_record("overlay/198.18.0.11", record)
