"""Isolation between virtual networks, as an nftables ruleset (sans-IO: this renders it).

vxnet owns the table ``inet vxnet-isolation`` (IPv4 and IPv6 in one). Its ``forward`` chain
(hook forward, priority filter - 10: before Docker's iptables chains, whose accept cannot undo a
reject here) lets established and related packets through (replies to an allowed connection
always pass, and connections keep going across a policy change), then looks the destination up
in an interval verdict map of the overlay's subnets (``dst4``, ``dst6``) and jumps to the chain
of the destination network, ``to-<net>``. That chain returns (the packet goes on) for sources in
the network itself, in networks that ``[[network.allow]]`` opens to it (with their ports, one rule
per pair), and in its ``allow_hosts``; anything else jumps, by the source's network (another
verdict map), to ``refuse-<from>-<to>`` (``refuse-hosts-<to>`` for sources outside the overlay),
which counts the packet in the named counter of that pair and rejects it at once: a TCP reset,
ICMP administratively prohibited for the rest.

So the rules grow with networks and allowed pairs, never with agents or containers; a change is
one transaction (the table is created, deleted and created again, as :mod:`._nat` does), and the
agent's own traffic (its health checks to its containers) leaves through ``output``, never
``forward``: it is not filtered. With ``network.isolation`` false the table is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any

from vxnet.config import port_spec_problem
from vxnet.overlay._local_model import Nat

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "TABLE",
    "Allowed",
    "NetworkSpace",
    "Policy",
    "desired_isolation",
    "isolation_ruleset",
    "policy_from_network",
    "refused_counter",
]

TABLE = "vxnet-isolation"
HOSTS = "hosts"  # the "from" of refused traffic from outside the overlay


@dataclass(frozen=True, slots=True)
class NetworkSpace:
    """A virtual network's address space (IPv4 and IPv6 networks, CIDR) and its allowed hosts."""

    name: str
    subnets: tuple[str, ...]
    allow_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Allowed:
    """``source`` may open connections to ``to`` (on ``ports``: ``tcp/5432``...; empty: all)."""

    source: str
    to: str
    ports: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    """The cluster's isolation policy, as the masters' network configuration says."""

    isolation: bool
    networks: tuple[NetworkSpace, ...]
    allow: tuple[Allowed, ...] = ()


def refused_counter(source: str, to: str) -> str:
    """The named counter of packets refused from ``source`` (or ``hosts``) to ``to``."""
    return f"refused-{source}-{to}"


def _family(cidr: str) -> str:
    return "ip6" if ":" in cidr else "ip"


def _port_matches(spec: str) -> str:
    """``tcp/5432`` -> ``meta l4proto tcp th dport 5432``; ``udp`` -> ``meta l4proto udp``."""
    protocol, _, ports = spec.partition("/")
    match = f"meta l4proto {protocol}"
    return f"{match} th dport {ports}" if ports else match


def _elements(items: Sequence[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def isolation_ruleset(policy: Policy) -> str:
    """The ``nft -f`` input that sets vxnet's isolation table for ``policy`` (with isolation off,
    or no network with an address space, it only removes the table)."""
    lines = [f"table inet {TABLE}", f"delete table inet {TABLE}"]
    networks = [n for n in policy.networks if n.subnets]
    if not policy.isolation or not networks:
        return "\n".join(lines) + "\n"
    by_name = {n.name: n for n in networks}
    pairs = [(m.name, n.name) for n in networks for m in networks if m is not n]
    pairs = sorted(pairs + [(HOSTS, n.name) for n in networks])
    lines.append(f"table inet {TABLE} {{")
    for source, to in pairs:
        lines.append(f"  counter {refused_counter(source, to)} {{ }}")
    for family in ("ip", "ip6"):
        entries = [
            f"{cidr} : jump to-{n.name}"
            for n in networks
            for cidr in n.subnets
            if _family(cidr) == family
        ]
        if entries:
            kind = "ipv4_addr" if family == "ip" else "ipv6_addr"
            lines += [
                f"  map dst{family[2:] or '4'} {{",
                f"    type {kind} : verdict; flags interval;",
                f"    elements = {_elements(entries)}",
                "  }",
            ]
    lines += [
        "  chain forward {",
        "    type filter hook forward priority filter - 10; policy accept;",
        "    ct state established,related accept",
    ]
    if any(_family(c) == "ip" for n in networks for c in n.subnets):
        lines.append("    ip daddr vmap @dst4")
    if any(_family(c) == "ip6" for n in networks for c in n.subnets):
        lines.append("    ip6 daddr vmap @dst6")
    lines.append("  }")
    for n in networks:
        lines.append(f"  chain to-{n.name} {{")
        for cidr in n.subnets:  # itself
            lines.append(f"    {_family(cidr)} saddr {cidr} return")
        for a in policy.allow:
            origin = by_name.get(a.source)
            if a.to != n.name or origin is None or origin is n:
                continue
            for cidr in origin.subnets:
                for match in [_port_matches(p) for p in a.ports] or [""]:
                    rule = [f"{_family(cidr)} saddr {cidr}", match, "return"]
                    lines.append("    " + " ".join(part for part in rule if part))
        for cidr in n.allow_hosts:
            lines.append(f"    {_family(cidr)} saddr {cidr} return")
        for family in ("ip", "ip6"):
            by_source = [
                f"{cidr} : jump refuse-{m.name}-{n.name}"
                for m in networks
                if m is not n
                for cidr in m.subnets
                if _family(cidr) == family
            ]
            if by_source:
                lines.append(f"    {family} saddr vmap {_elements(by_source)}")
        lines.append(f"    jump refuse-{HOSTS}-{n.name}")
        lines.append("  }")
    for source, to in pairs:
        lines += [
            f"  chain refuse-{source}-{to} {{",
            f'    counter name "{refused_counter(source, to)}"',
            "    meta l4proto tcp reject with tcp reset",
            "    reject with icmpx admin-prohibited",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def policy_from_network(network: object) -> Policy:
    """The policy in a master's network configuration (``GET /overlay-master/network``).

    Raises:
        ValueError: It is not one (the message says what is wrong).
    """
    if not isinstance(network, dict):
        raise ValueError("the network configuration is not an object")
    isolation = network.get("isolation", True)
    overlays = network.get("overlays", [])
    allow = network.get("allow", [])
    if not isinstance(isolation, bool) or not isinstance(overlays, list):
        raise ValueError("isolation: true or false; overlays: a list")
    if not isinstance(allow, list):
        raise ValueError("allow: a list")
    spaces = []
    for o in overlays:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise ValueError("an overlay without a name")
        nets = tuple(_cidr(o[k]) for k in ("subnet", "subnet6") if o.get(k) is not None)
        hosts = tuple(_cidr(h) for h in _strings(o.get("allow_hosts", []), "allow_hosts"))
        spaces.append(NetworkSpace(o["name"], nets, hosts))
    pairs = []
    for a in allow:
        if not isinstance(a, dict) or not isinstance(a.get("from"), str):
            raise ValueError("an allow entry without from")
        if not isinstance(a.get("to"), str):
            raise ValueError("an allow entry without to")
        ports = _strings(a.get("ports", []), "ports")
        for spec in ports:
            problem = port_spec_problem(spec)
            if problem:
                raise ValueError(problem)
        pairs.append(Allowed(a["from"], a["to"], tuple(ports)))
    return Policy(isolation, tuple(spaces), tuple(pairs))


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what}: a list of strings")
    return list(value)


def _cidr(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a network")
    return str(ip_network(value))


def desired_isolation(policy: Policy | None) -> Nat | None:
    """The desired isolation table (``None``: the policy is not known yet, leave it be)."""
    if policy is None:
        return None
    text = isolation_ruleset(policy)
    present = "\n  chain forward {" in text
    return Nat(text, frozenset({"inet"}) if present else frozenset())
