"""The kernel objects an agent owns towards its remote agents, as plain values (sans-IO).

For every live remote agent R the agent wants, on its VTEP device (``vtep<vni>``):

* a route to each of R's subnets (IPv4 and IPv6) via R's VTEP address, ``onlink``, with the
  route protocol :data:`ROUTE_PROTOCOL` that marks it as vxnet's;
* a permanent neighbour entry R's VTEP IP (and VTEP IPv6) -> R's VTEP MAC;
* a permanent forwarding (FDB) entry R's VTEP MAC -> R's agent IP (the underlay address).

Objects are identified by a key (what the kernel keys them by) and compared by value: an object
whose key is present with another value is *replaced*, never deleted and re-added. Only objects
vxnet owns are ever read as "actual" state: routes of protocol :data:`ROUTE_PROTOCOL`, and
neighbour and FDB entries on the VTEP device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ROUTE_PROTOCOL",
    "Fdb",
    "KernelState",
    "Neighbour",
    "Op",
    "RemoteAgent",
    "Route",
    "desired_state",
]

ROUTE_PROTOCOL = 44  # rtm_protocol of vxnet's routes (free in /etc/iproute2/rt_protos)


@dataclass(frozen=True, slots=True, order=True)
class Route:
    """``dst via gateway dev dev onlink proto 44``; keyed by ``(family, dst)``."""

    dst: str  # a network in CIDR form, e.g. "9.0.1.0/24" or "fd01:b::1:0:0:0/80"
    gateway: str  # the remote VTEP address (no prefix length)
    dev: str

    @property
    def family(self) -> int:
        return 6 if ":" in self.dst else 4

    @property
    def key(self) -> tuple[int, str]:
        return (self.family, self.dst)


@dataclass(frozen=True, slots=True, order=True)
class Neighbour:
    """``ip lladdr mac dev dev nud permanent``; keyed by ``(dev, ip)``."""

    ip: str
    mac: str  # lowercase, colon-separated
    dev: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.dev, self.ip)


@dataclass(frozen=True, slots=True, order=True)
class Fdb:
    """``bridge fdb`` entry ``mac dst dst dev dev self permanent``; keyed by ``(dev, mac)``."""

    mac: str
    dst: str  # the remote agent's underlay IP
    dev: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.dev, self.mac)


KernelObject = Route | Neighbour | Fdb


@dataclass(frozen=True, slots=True)
class KernelState:
    """A set of owned kernel objects (desired or actual)."""

    routes: frozenset[Route] = field(default_factory=frozenset)
    neighbours: frozenset[Neighbour] = field(default_factory=frozenset)
    fdb: frozenset[Fdb] = field(default_factory=frozenset)

    def size(self) -> int:
        return len(self.routes) + len(self.neighbours) + len(self.fdb)


@dataclass(frozen=True, slots=True)
class Op:
    """One change: ``"replace"`` (add or overwrite the object at its key) or ``"delete"``."""

    action: str  # "replace" | "delete"
    obj: KernelObject


@dataclass(frozen=True, slots=True)
class RemoteAgent:
    """What the local agent knows of a remote one (from its ``overlay/<ip>`` record)."""

    ip: str  # underlay address
    vtep_ip: str  # without prefix length
    vtep_mac: str
    vtep_ip6: str | None = None
    subnets: tuple[str, ...] = ()  # IPv4 and IPv6 agent subnets, CIDR


def desired_state(remotes: Iterable[RemoteAgent], dev: str) -> KernelState:
    """The objects towards ``remotes`` on VTEP device ``dev``."""
    routes: set[Route] = set()
    neighbours: set[Neighbour] = set()
    fdb: set[Fdb] = set()
    for r in remotes:
        mac = r.vtep_mac.lower()
        fdb.add(Fdb(mac, r.ip, dev))
        neighbours.add(Neighbour(r.vtep_ip, mac, dev))
        if r.vtep_ip6:
            neighbours.add(Neighbour(r.vtep_ip6, mac, dev))
        for subnet in r.subnets:
            if ":" in subnet:
                if r.vtep_ip6:
                    routes.add(Route(subnet, r.vtep_ip6, dev))
            else:
                routes.add(Route(subnet, r.vtep_ip, dev))
    return KernelState(frozenset(routes), frozenset(neighbours), frozenset(fdb))
