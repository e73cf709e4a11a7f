"""The ``overlay/<agent ip>`` records agents publish in the replicated store, and reading them back.

Each agent publishes what the others need to reach its containers::

    overlay/198.18.0.11 = {"agent_ip": "198.18.0.11", "vtep_ip": "44.128.0.1",
                           "vtep_mac": "70:b3:d5:80:00:01", "vtep_ip6": "fd01:a::1",
                           "subnets": ["9.0.0.0/24", "fd01:b::/80"],
                           "networks": {"dcos": {"subnet": "9.0.0.0/24",
                                                 "subnet6": "fd01:b::/80"}}}

``subnets`` is what the others route to this agent; ``networks`` says which network each
belongs to (for people and tools: ``vxnet store get overlay/<ip>``).

Addresses are written in :mod:`ipaddress`'s canonical spelling, so that the routes built from them
compare equal to what the kernel reports. A record that does not fit (a missing field, an address
that does not parse, a subnet of the wrong family for the VTEP) is skipped with the reason, never
programmed half.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from vxnet.overlay._model import RemoteAgent

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["RECORD_PREFIX", "RecordError", "overlay_record", "remote_from_record"]

RECORD_PREFIX = "overlay/"


class RecordError(ValueError):
    """An overlay record that cannot be used; the text says why."""


def _address(info: Mapping[str, Any], key: str) -> str:
    """The address part of ``44.128.0.1/20`` (AgentInfo spells VTEPs with their prefix)."""
    return str(ipaddress.ip_interface(str(info[key])).ip)


def overlay_record(agent: Mapping[str, Any]) -> dict[str, Any]:
    """This agent's record, from the AgentInfo the masters gave it.

    Raises:
        RecordError: The AgentInfo has no VTEP (every network failed).
    """
    vxlan: dict[str, Any] | None = None
    subnets: list[str] = []
    networks: dict[str, dict[str, str]] = {}
    for overlay in agent.get("overlays", []):
        if overlay.get("state", {}).get("status") == "STATUS_FAILED":
            continue
        backend = overlay.get("backend", {}).get("vxlan")
        if backend and vxlan is None:
            vxlan = backend
        for key in ("subnet", "subnet6"):
            if overlay.get(key):
                subnet = str(ipaddress.ip_network(overlay[key]))
                subnets.append(subnet)
                networks.setdefault(str(overlay.get("info", {}).get("name")), {})[key] = subnet
    if vxlan is None:
        raise RecordError(f"agent {agent.get('ip')}: no network was allocated, so no VTEP")
    record: dict[str, Any] = {
        "agent_ip": str(ipaddress.IPv4Address(agent["ip"])),
        "vtep_ip": _address(vxlan, "vtep_ip"),
        "vtep_mac": str(vxlan["vtep_mac"]).lower(),
        "subnets": subnets,
        "networks": networks,
    }
    if vxlan.get("vtep_ip6"):
        record["vtep_ip6"] = _address(vxlan, "vtep_ip6")
    return record


def remote_from_record(key: str, value: Mapping[str, Any]) -> RemoteAgent:
    """The remote agent a store record describes.

    Raises:
        RecordError: The record does not fit; the message names the key and the field.
    """
    try:
        agent_ip = ipaddress.IPv4Address(str(value["agent_ip"]))
        vtep_ip = ipaddress.IPv4Address(str(value["vtep_ip"]))
        mac = str(value["vtep_mac"]).lower()
        parts = mac.split(":")
        if len(parts) != 6 or not all(len(p) == 2 for p in parts):
            raise RecordError(f"{key}: vtep_mac {mac!r} is not a MAC address")
        int(mac.replace(":", ""), 16)
        vtep_ip6 = value.get("vtep_ip6")
        ip6 = None if vtep_ip6 is None else ipaddress.IPv6Address(str(vtep_ip6))
        subnets = []
        for text in value.get("subnets", []):
            net = ipaddress.ip_network(str(text))
            if net.version == 6 and ip6 is None:
                raise RecordError(f"{key}: IPv6 subnet {net} but no vtep_ip6")
            subnets.append(str(net))
    except RecordError:
        raise
    except KeyError as exc:
        raise RecordError(f"{key}: missing {exc.args[0]}") from None
    except (ValueError, TypeError) as exc:
        raise RecordError(f"{key}: {exc}") from None
    if key != f"{RECORD_PREFIX}{agent_ip}":
        raise RecordError(f"{key}: names agent {agent_ip}, not the agent of its key")
    return RemoteAgent(
        ip=str(agent_ip),
        vtep_ip=str(vtep_ip),
        vtep_mac=mac,
        vtep_ip6=None if ip6 is None else str(ip6),
        subnets=tuple(sorted(subnets)),
    )
