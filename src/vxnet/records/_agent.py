"""AgentInfo: what the masters allocate to one agent, in DC/OS ``overlay.proto``'s JSON shape.

::

    {"ip": "198.18.0.11",
     "overlays": [{"info": {"name": "dcos", "subnet": "9.0.0.0/8", "prefix": 24},
                   "subnet": "9.0.0.0/24",
                   "mesos_bridge": {"name": "m-dcos", "mtu": 1420, "ip": "9.0.0.1/25"},
                   "docker_bridge": {"name": "d-dcos", "mtu": 1420, "ip": "9.0.0.129/25"},
                   "backend": {"vxlan": {"vni": 1024, "vtep_name": "vtep1024",
                                         "vtep_ip": "44.128.0.1/20",
                                         "vtep_mac": "70:b3:d5:80:00:01", ...}},
                   "state": {"status": "STATUS_OK"}}]}

Rules:
  * Field names are ``overlay.proto``'s (plus vxnet's ``mtu`` on bridges and ``vxlan_port``,
    ``vtep_mtu`` on the backend); an absent optional field is ``None`` and is left out of the JSON.
  * One status rule for every reader: an overlay entry is usable when, and only when, its status
    is :attr:`Status.OK` (:attr:`AgentOverlay.ok`). An entry without a state, or with a status this
    version does not know, reads as :attr:`Status.INVALID` and so is not usable.
  * Unknown fields (a newer writer's) are ignored, never refused; a field of the wrong type is
    refused with a :class:`~._codec.RecordError` that names it (``overlays[1].backend.vxlan.vni``).
  * Values are kept as written (addresses are not re-spelled): readers that need
    :mod:`ipaddress` objects parse them where they use them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from vxnet.records._codec import (
    RecordError,
    as_object,
    opt_bool,
    opt_int,
    opt_list,
    opt_object,
    opt_str,
    req_str,
    without_none,
)

__all__ = [
    "AgentInfo",
    "AgentOverlay",
    "Bridge",
    "OverlayInfo",
    "State",
    "Status",
    "VxLAN",
    "agent_infos",
]


class Status(enum.StrEnum):
    """An overlay entry's ``state.status``, with ``overlay.proto``'s names as values."""

    INVALID = "STATUS_INVALID"
    OK = "STATUS_OK"
    FAILED = "STATUS_FAILED"
    CONFIGURING = "STATUS_CONFIGURING"

    @property
    def label(self) -> str:
        """The name without its ``STATUS_`` prefix, for people: ``OK``, ``FAILED``, ..."""
        return self.value.removeprefix("STATUS_")

    @classmethod
    def parse(cls, value: object, where: str) -> Status:
        """The status ``value`` names; an unknown name (a newer version's) is ``INVALID``.

        Raises:
            RecordError: ``value`` is not a string.
        """
        if value is None:
            return cls.INVALID
        if not isinstance(value, str):
            raise RecordError(f"{where}: expected a status name, got {value!r}")
        try:
            return cls(value)
        except ValueError:
            return cls.INVALID


@dataclass(frozen=True, slots=True)
class State:
    """``AgentOverlayInfo.State``: the entry's status and, when it failed, why."""

    status: Status
    error: str | None = None

    @classmethod
    def from_json(cls, obj: object, where: str = "state") -> State:
        o = as_object(obj, where)
        return cls(Status.parse(o.get("status"), f"{where}.status"), opt_str(o, "error", where))

    def to_json(self) -> dict[str, Any]:
        return without_none({"status": self.status.value, "error": self.error})


_NO_STATE = State(Status.INVALID)


@dataclass(frozen=True, slots=True)
class Bridge:
    """``BridgeInfo``: a bridge ``m-<name>`` or ``d-<name>`` and its addresses (with prefix)."""

    name: str
    ip: str | None = None
    ip6: str | None = None
    mtu: int | None = None

    @classmethod
    def from_json(cls, obj: object, where: str = "bridge") -> Bridge:
        o = as_object(obj, where)
        return cls(
            name=req_str(o, "name", where),
            ip=opt_str(o, "ip", where),
            ip6=opt_str(o, "ip6", where),
            mtu=opt_int(o, "mtu", where),
        )

    def to_json(self) -> dict[str, Any]:
        return without_none({"name": self.name, "mtu": self.mtu, "ip": self.ip, "ip6": self.ip6})


@dataclass(frozen=True, slots=True)
class VxLAN:
    """``VxLANInfo`` (``backend.vxlan``): the agent's VTEP (addresses with their prefix)."""

    vtep_ip: str
    vtep_mac: str
    vni: int | None = None
    vtep_name: str | None = None
    vtep_ip6: str | None = None
    vtep_mtu: int | None = None
    vxlan_port: int | None = None

    @classmethod
    def from_json(cls, obj: object, where: str = "vxlan") -> VxLAN:
        o = as_object(obj, where)
        return cls(
            vtep_ip=req_str(o, "vtep_ip", where),
            vtep_mac=req_str(o, "vtep_mac", where),
            vni=opt_int(o, "vni", where),
            vtep_name=opt_str(o, "vtep_name", where),
            vtep_ip6=opt_str(o, "vtep_ip6", where),
            vtep_mtu=opt_int(o, "vtep_mtu", where),
            vxlan_port=opt_int(o, "vxlan_port", where),
        )

    def to_json(self) -> dict[str, Any]:
        return without_none(
            {
                "vni": self.vni,
                "vtep_name": self.vtep_name,
                "vtep_ip": self.vtep_ip,
                "vtep_mac": self.vtep_mac,
                "vxlan_port": self.vxlan_port,
                "vtep_mtu": self.vtep_mtu,
                "vtep_ip6": self.vtep_ip6,
            }
        )


@dataclass(frozen=True, slots=True)
class OverlayInfo:
    """``OverlayInfo``: a network as configured (its whole address space and subnet lengths)."""

    name: str
    subnet: str | None = None
    prefix: int | None = None
    subnet6: str | None = None
    prefix6: int | None = None
    enabled: bool | None = None

    @classmethod
    def from_json(cls, obj: object, where: str = "info") -> OverlayInfo:
        o = as_object(obj, where)
        return cls(
            name=req_str(o, "name", where),
            subnet=opt_str(o, "subnet", where),
            prefix=opt_int(o, "prefix", where),
            subnet6=opt_str(o, "subnet6", where),
            prefix6=opt_int(o, "prefix6", where),
            enabled=opt_bool(o, "enabled", where),
        )

    def to_json(self) -> dict[str, Any]:
        return without_none(
            {
                "name": self.name,
                "subnet": self.subnet,
                "prefix": self.prefix,
                "subnet6": self.subnet6,
                "prefix6": self.prefix6,
                "enabled": self.enabled,
            }
        )


@dataclass(frozen=True, slots=True)
class AgentOverlay:
    """``AgentOverlayInfo``: one network of one agent, its subnets, bridges, VTEP and state."""

    info: OverlayInfo
    state: State = _NO_STATE
    subnet: str | None = None
    subnet6: str | None = None
    mesos_bridge: Bridge | None = None
    docker_bridge: Bridge | None = None
    backend: VxLAN | None = None

    @property
    def name(self) -> str:
        """The network's name."""
        return self.info.name

    @property
    def ok(self) -> bool:
        """Whether the entry is usable: its status is OK (the one rule every reader applies)."""
        return self.state.status is Status.OK

    def subnets(self) -> tuple[str, ...]:
        """The subnets the agent holds in this network, IPv4 first."""
        return tuple(s for s in (self.subnet, self.subnet6) if s)

    @classmethod
    def from_json(cls, obj: object, where: str = "overlay") -> AgentOverlay:
        o = as_object(obj, where)
        if "info" not in o:
            raise RecordError(f"{where}.info: missing")
        state = opt_object(o, "state", where)
        mesos = opt_object(o, "mesos_bridge", where)
        docker = opt_object(o, "docker_bridge", where)
        backend = opt_object(o, "backend", where)
        vxlan = None if backend is None else backend.get("vxlan")
        return cls(
            info=OverlayInfo.from_json(o["info"], f"{where}.info"),
            state=_NO_STATE if state is None else State.from_json(state, f"{where}.state"),
            subnet=opt_str(o, "subnet", where),
            subnet6=opt_str(o, "subnet6", where),
            mesos_bridge=None
            if mesos is None
            else Bridge.from_json(mesos, f"{where}.mesos_bridge"),
            docker_bridge=(
                None if docker is None else Bridge.from_json(docker, f"{where}.docker_bridge")
            ),
            backend=None if vxlan is None else VxLAN.from_json(vxlan, f"{where}.backend.vxlan"),
        )

    def to_json(self) -> dict[str, Any]:
        return without_none(
            {
                "info": self.info.to_json(),
                "subnet": self.subnet,
                "subnet6": self.subnet6,
                "mesos_bridge": None if self.mesos_bridge is None else self.mesos_bridge.to_json(),
                "docker_bridge": (
                    None if self.docker_bridge is None else self.docker_bridge.to_json()
                ),
                "backend": None if self.backend is None else {"vxlan": self.backend.to_json()},
                "state": self.state.to_json(),
            }
        )


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """``AgentInfo``: an agent's underlay address and its networks, in the masters' order."""

    ip: str
    overlays: tuple[AgentOverlay, ...] = ()
    configuration_attempts: int | None = None

    def usable(self) -> tuple[AgentOverlay, ...]:
        """The entries whose status is OK."""
        return tuple(o for o in self.overlays if o.ok)

    def vxlan(self) -> VxLAN | None:
        """The agent's VTEP: the backend of its first usable entry (all carry the same)."""
        return next((o.backend for o in self.overlays if o.ok and o.backend is not None), None)

    @classmethod
    def from_json(cls, obj: object, where: str = "") -> AgentInfo:
        """The AgentInfo of a JSON object.

        Raises:
            RecordError: A missing ``ip``, or a field of the wrong type (the message names it).
        """
        o = as_object(obj, where or "AgentInfo")
        ip = req_str(o, "ip", where)
        at = f"{where}.overlays" if where else "overlays"
        return cls(
            ip=ip,
            overlays=tuple(
                AgentOverlay.from_json(e, f"{at}[{i}]")
                for i, e in enumerate(opt_list(o, "overlays", where))
            ),
            configuration_attempts=opt_int(o, "configuration_attempts", where),
        )

    def to_json(self) -> dict[str, Any]:
        return without_none(
            {
                "ip": self.ip,
                "overlays": [o.to_json() for o in self.overlays],
                "configuration_attempts": self.configuration_attempts,
            }
        )


def agent_infos(values: object, where: str = "agents") -> tuple[AgentInfo, ...]:
    """A list of AgentInfo objects (the ``agents`` of the masters' state).

    Raises:
        RecordError: ``values`` is not a list, or an entry does not fit.
    """
    if not isinstance(values, list):
        raise RecordError(f"{where}: expected a list, got {values!r}")
    return tuple(AgentInfo.from_json(v, f"{where}[{i}]") for i, v in enumerate(values))
