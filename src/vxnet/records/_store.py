"""The records agents publish in the replicated store: overlay, task and usage records.

Keys::

    overlay/<agent ip>            OverlayRecord   what the others need to reach its containers
    tasks/<agent ip>/<task id>    TaskRecord      one container (or API task) and its addresses
    usage/<agent ip>              UsageRecord     addresses allocated and free per network half

Each record type has one codec here (``from_json`` / ``to_json``); producers build the dataclass,
readers call ``from_json`` and get a :class:`~._codec.RecordError` (a ``ValueError``) naming the
field when the value does not fit. Unknown fields, a newer version's, are ignored.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vxnet.records._codec import RecordError, as_object, opt_int, without_none

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vxnet.records._agent import AgentInfo

__all__ = [
    "OVERLAY_PREFIX",
    "PROTOCOLS",
    "TASK_PREFIX",
    "USAGE_PREFIX",
    "HalfUsage",
    "NetworkSubnets",
    "OverlayRecord",
    "Port",
    "TaskRecord",
    "UsageRecord",
]

OVERLAY_PREFIX = "overlay/"
TASK_PREFIX = "tasks/"
USAGE_PREFIX = "usage/"
PROTOCOLS = ("tcp", "udp")


# --- overlay/<agent ip> -------------------------------------------------------------------------


def _address(text: str) -> str:
    """The address part of ``44.128.0.1/20`` (AgentInfo spells VTEPs with their prefix)."""
    return str(ipaddress.ip_interface(text).ip)


@dataclass(frozen=True, slots=True)
class NetworkSubnets:
    """The subnets an agent holds in one network (for people and tools)."""

    subnet: str | None = None
    subnet6: str | None = None

    def to_json(self) -> dict[str, str]:
        return without_none({"subnet": self.subnet, "subnet6": self.subnet6})


@dataclass(frozen=True, slots=True)
class OverlayRecord:
    """``overlay/<agent ip>``: an agent's VTEP and the subnets the others route to it.

    Addresses are in :mod:`ipaddress`'s canonical spelling, so that routes built from them compare
    equal to what the kernel reports; the MAC is lower case.
    """

    agent_ip: str
    vtep_ip: str
    vtep_mac: str
    subnets: tuple[str, ...] = ()
    vtep_ip6: str | None = None
    networks: Mapping[str, NetworkSubnets] = field(default_factory=dict)

    @classmethod
    def of_agent(cls, agent: AgentInfo) -> OverlayRecord:
        """The record of an agent, from the AgentInfo the masters gave it (usable entries only).

        Raises:
            RecordError: The AgentInfo has no usable entry, so no VTEP; or an address in it
                does not parse.
        """
        vxlan = agent.vxlan()
        if vxlan is None:
            raise RecordError(f"agent {agent.ip}: no network was allocated, so no VTEP")
        subnets: list[str] = []
        networks: dict[str, NetworkSubnets] = {}
        try:
            for overlay in agent.usable():
                v4 = None if not overlay.subnet else str(ipaddress.ip_network(overlay.subnet))
                v6 = None if not overlay.subnet6 else str(ipaddress.ip_network(overlay.subnet6))
                subnets += [s for s in (v4, v6) if s is not None]
                if v4 is not None or v6 is not None:
                    networks[overlay.name] = NetworkSubnets(v4, v6)
            return cls(
                agent_ip=str(ipaddress.IPv4Address(agent.ip)),
                vtep_ip=_address(vxlan.vtep_ip),
                vtep_mac=vxlan.vtep_mac.lower(),
                subnets=tuple(subnets),
                vtep_ip6=None if not vxlan.vtep_ip6 else _address(vxlan.vtep_ip6),
                networks=networks,
            )
        except ValueError as exc:
            raise RecordError(f"agent {agent.ip}: {exc}") from None

    @classmethod
    def from_json(cls, obj: object, key: str | None = None) -> OverlayRecord:
        """The record stored under ``key``, checked: every address parses, every IPv6 subnet has
        a VTEP IPv6 address, and (given its key) the record names the agent of its key.

        Raises:
            RecordError: The record does not fit; the message names the key and the field.
        """
        where = "overlay record" if key is None else key
        try:
            value = as_object(obj, where)
            agent_ip = ipaddress.IPv4Address(str(value["agent_ip"]))
            vtep_ip = ipaddress.IPv4Address(str(value["vtep_ip"]))
            mac = str(value["vtep_mac"]).lower()
            parts = mac.split(":")
            if len(parts) != 6 or not all(len(p) == 2 for p in parts):
                raise RecordError(f"{where}: vtep_mac {mac!r} is not a MAC address")
            int(mac.replace(":", ""), 16)
            raw6 = value.get("vtep_ip6")
            ip6 = None if raw6 is None else ipaddress.IPv6Address(str(raw6))
            subnets = []
            for text in value.get("subnets", []):
                net = ipaddress.ip_network(str(text))
                if net.version == 6 and ip6 is None:
                    raise RecordError(f"{where}: IPv6 subnet {net} but no vtep_ip6")
                subnets.append(str(net))
            networks = {}
            raw_networks = value.get("networks")
            for name, subs in (raw_networks if isinstance(raw_networks, dict) else {}).items():
                if isinstance(subs, dict):
                    v4, v6 = subs.get("subnet"), subs.get("subnet6")
                    networks[str(name)] = NetworkSubnets(
                        None if v4 is None else str(v4), None if v6 is None else str(v6)
                    )
        except RecordError:
            raise
        except KeyError as exc:
            raise RecordError(f"{where}: missing {exc.args[0]}") from None
        except (ValueError, TypeError) as exc:
            raise RecordError(f"{where}: {exc}") from None
        if key is not None and key != f"{OVERLAY_PREFIX}{agent_ip}":
            raise RecordError(f"{key}: names agent {agent_ip}, not the agent of its key")
        return cls(
            agent_ip=str(agent_ip),
            vtep_ip=str(vtep_ip),
            vtep_mac=mac,
            subnets=tuple(subnets),
            vtep_ip6=None if ip6 is None else str(ip6),
            networks=networks,
        )

    @property
    def key(self) -> str:
        """The store key of this record."""
        return f"{OVERLAY_PREFIX}{self.agent_ip}"

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "agent_ip": self.agent_ip,
            "vtep_ip": self.vtep_ip,
            "vtep_mac": self.vtep_mac,
            "subnets": list(self.subnets),
            "networks": {name: n.to_json() for name, n in self.networks.items()},
        }
        if self.vtep_ip6 is not None:
            record["vtep_ip6"] = self.vtep_ip6
        return record


# --- tasks/<agent ip>/<task id> -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Port:
    """A port of a task: SRV records point at it."""

    name: str  # e.g. "http"; "" for none
    port: int
    protocol: str = "tcp"  # "tcp" | "udp"

    @classmethod
    def from_json(cls, raw: object, where: str) -> Port:
        if not isinstance(raw, dict):
            raise RecordError(f"{where}: an object, got {raw!r}")
        name = raw.get("name", "")
        if name is None:
            name = ""
        if not isinstance(name, str):
            raise RecordError(f"{where}.name: a string, got {name!r}")
        number = raw.get("port")
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            raise RecordError(f"{where}.port: a number from 1 to 65535, got {number!r}")
        protocol = raw.get("protocol", "tcp")
        if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
            raise RecordError(f"{where}.protocol: 'tcp' or 'udp', got {protocol!r}")
        return cls(name, number, protocol.lower())

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "protocol": self.protocol}


def _text(value: Mapping[str, Any], key: str) -> str:
    text = value.get(key)
    if not isinstance(text, str) or not text:
        raise RecordError(f"{key}: a non-empty string, got {text!r}")
    return text


def _opt_text(value: Mapping[str, Any], key: str) -> str | None:
    text = value.get(key)
    if text is not None and not isinstance(text, str):
        raise RecordError(f"{key}: a string, got {text!r}")
    return text


def _task_address(value: Mapping[str, Any], key: str, version: int) -> str | None:
    raw = value.get(key)
    if raw is None:
        return None
    try:
        address = ipaddress.ip_address(raw) if isinstance(raw, str) else None
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise RecordError(f"{key}: an IPv{version} address, got {raw!r}")
    return str(address)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """``tasks/<agent ip>/<task id>``: a running container (or API task) and its addresses.

    ``runtime`` is ``cni``, ``docker`` or ``api``; ``ports_mapped`` says whether it maps host
    ports (DNS's ``autoip`` then answers the agent's address).
    """

    name: str
    framework: str
    agent_ip: str  # IPv4
    network: str | None = None
    runtime: str | None = None
    container_id: str | None = None
    ip: str | None = None  # container IPv4
    ip6: str | None = None  # container IPv6
    ports_mapped: bool = False
    ports: tuple[Port, ...] = ()

    @staticmethod
    def key_of(agent_ip: str, task_id: str) -> str:
        """The store key of task ``task_id`` of agent ``agent_ip``."""
        return f"{TASK_PREFIX}{agent_ip}/{task_id}"

    @classmethod
    def from_json(cls, obj: object) -> TaskRecord:
        """The task a store task record describes.

        The fields: ``name``, ``framework``, ``agent_ip`` (IPv4), optionally ``network``,
        ``runtime``, ``container_id``, ``ip`` (IPv4), ``ip6`` (IPv6), ``ports_mapped`` (bool)
        and ``ports`` (a list of ``{"name", "port", "protocol"}``, ``protocol`` ``tcp`` or
        ``udp``, ``tcp`` by default).

        Raises:
            RecordError: The record does not fit; the message starts with the field.
        """
        if not isinstance(obj, dict):
            raise RecordError(f"a task record is an object, not {type(obj).__name__}")
        name = _text(obj, "name")
        framework = _text(obj, "framework")
        agent_ip = _task_address(obj, "agent_ip", 4)
        if agent_ip is None:
            raise RecordError("agent_ip: missing")
        mapped = obj.get("ports_mapped", False)
        if not isinstance(mapped, bool):
            raise RecordError(f"ports_mapped: true or false, got {mapped!r}")
        raw_ports = obj.get("ports")
        if raw_ports is None:
            raw_ports = []
        if not isinstance(raw_ports, list):
            raise RecordError(f"ports: a list, got {raw_ports!r}")
        return cls(
            name=name,
            framework=framework,
            agent_ip=agent_ip,
            network=_opt_text(obj, "network"),
            runtime=_opt_text(obj, "runtime"),
            container_id=_opt_text(obj, "container_id"),
            ip=_task_address(obj, "ip", 4),
            ip6=_task_address(obj, "ip6", 6),
            ports_mapped=mapped,
            ports=tuple(Port.from_json(raw, f"ports[{i}]") for i, raw in enumerate(raw_ports)),
        )

    def to_json(self) -> dict[str, Any]:
        record = without_none(
            {
                "name": self.name,
                "framework": self.framework,
                "network": self.network,
                "agent_ip": self.agent_ip,
                "runtime": self.runtime,
                "ports_mapped": self.ports_mapped,
                "container_id": self.container_id,
            }
        )
        if self.ports:
            record["ports"] = [p.to_json() for p in self.ports]
        if self.ip is not None:
            record["ip"] = self.ip
        if self.ip6 is not None:
            record["ip6"] = self.ip6
        return record


# --- usage/<agent ip> ---------------------------------------------------------------------------

_COUNTS = ("total", "allocated", "free", "total6", "allocated6", "free6")


@dataclass(frozen=True, slots=True)
class HalfUsage:
    """Addresses of one half (``cni`` or ``docker``) of one network: IPv4, and IPv6 if any."""

    total: int | None = None
    allocated: int | None = None
    free: int | None = None
    total6: int | None = None
    allocated6: int | None = None
    free6: int | None = None

    def families(self) -> tuple[tuple[str, int, int, int], ...]:
        """``(suffix, total, allocated, free)`` for each family counted (``""``, ``"6"``)."""
        out = []
        if self.total is not None:
            out.append(("", self.total, self.allocated or 0, self.free or 0))
        if self.total6 is not None:
            out.append(("6", self.total6, self.allocated6 or 0, self.free6 or 0))
        return tuple(out)

    @classmethod
    def from_json(cls, obj: object, where: str) -> HalfUsage:
        o = as_object(obj, where)
        counts = {k: opt_int(o, k, where) for k in _COUNTS}
        return cls(**counts)

    def to_json(self) -> dict[str, int]:
        return without_none({k: getattr(self, k) for k in _COUNTS})


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """``usage/<agent ip>``: per network, per half, how many addresses are allocated and free."""

    networks: Mapping[str, Mapping[str, HalfUsage]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: object, where: str = USAGE_PREFIX) -> UsageRecord:
        """Raises:
        RecordError: The record does not fit; the message names the field.
        """
        o = as_object(obj, where)
        raw = as_object(o.get("networks", {}), f"{where}.networks")
        networks: dict[str, dict[str, HalfUsage]] = {}
        for name, halves in raw.items():
            at = f"{where}.networks.{name}"
            networks[str(name)] = {
                str(half): HalfUsage.from_json(c, f"{at}.{half}")
                for half, c in as_object(halves, at).items()
            }
        return cls(networks)

    def to_json(self) -> dict[str, Any]:
        return {
            "networks": {
                name: {half: c.to_json() for half, c in halves.items()}
                for name, halves in self.networks.items()
            }
        }
