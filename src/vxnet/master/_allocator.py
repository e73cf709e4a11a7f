"""The Subnet Allocation Module's state machine: VTEP addresses and agent subnets from log entries.

Every master applies the same entries (msgpack byte strings) in the same order to an
:class:`Allocator` and so reaches the same state and gives the same answers. The state machine does
no I/O, reads no clock, draws no random numbers and never depends on the iteration order of an
unsorted collection. The semantics are the DC/OS overlay master's, and the JSON field names are
those of ``overlay.proto`` in dcos-mesos-modules.

Commands
  An entry is a msgpack map with an ``op`` and exactly that op's keys, made by the static encoders:
  ``register`` (an agent's IP, the networks it wants or nil for all, two bridge flags), ``delete``
  (agent IPs) and ``network`` (a new network configuration, as :func:`network_json` gives it). An
  entry that is not such a map, names an agent IP that is not IPv4 or names an unknown network is
  refused: :meth:`Allocator.apply` returns ``ok=False`` with the reason, counts it in
  :attr:`Allocator.failures` and changes nothing. It never raises on an entry.

VTEPs
  An agent's VTEP IP is the lowest free host address of ``vtep_subnet`` (the network and broadcast
  addresses are not hosts); its MAC is the OUI ``vtep_mac_oui`` plus the low 24 bits of that
  address. An agent that holds a subnet in any network with ``subnet6`` also gets a VTEP IPv6
  address, the lowest free address of ``vtep_subnet6`` other than the subnet's first. When a
  needed VTEP address cannot be had, the whole registration is refused (``vtep_exhausted``).

Subnets
  For each wanted network the agent gets the lowest free subnet of length ``prefix`` within
  ``subnet``, and the lowest free one of length ``prefix6`` within ``subnet6``, for whichever of the
  two the network has. The first half of a subnet belongs to the CNI bridge ``m-<name>``, the
  second to the Docker bridge ``d-<name>``; each bridge's address is the first host of its half. A
  bridge turned off is left out of the answer, but the whole subnet is still held. A network with
  no free subnet (of either family) is reported failed in the agent's answer while the other
  networks are allocated (``subnet_exhausted``); every later registration of the agent retries it.

Re-registration
  Registering again with the same request changes nothing and answers the same. Networks the agent
  holds are kept whether or not it asks for them again (they are freed only by deleting the
  agent); new bridge flags replace the old ones for the networks asked for, and the subnets stay.

Deletion
  Deleting agents frees everything they hold; IPs of unknown agents are ignored. Freed addresses
  and subnets are handed out again, lowest first.

Network changes
  A new network configuration must pass the configuration rules, and may not move anything an
  agent holds: a network some agent holds a subnet in keeps its subnets and prefixes, and while
  agents exist the VTEP subnet and the OUI stay (``vtep_subnet6`` while agents hold VTEP IPv6
  addresses). Anything else may change: networks can be added, and changed or removed while
  nobody holds a subnet in them; MTUs, the VNI and the port are free. A refused change returns
  every problem, joined by ``"; "``.

Pools
  Each pool of indexes (the VTEP addresses of both families, and every network's subnets of both
  families) is a heap of disjoint free ranges, so the lowest free index costs O(log n) however
  large the pool and after any pattern of deletes. A snapshot stores only what the agents hold;
  restoring rebuilds the pools from it.

Answers
  Every answer is a :class:`~vxnet.records.AgentInfo`. Each agent's JSON is kept, encoded, beside
  its entry and dropped when the entry (or the network configuration) changes, so that a read of
  the whole state (:meth:`Allocator.state_json`) re-encodes only the agents changed since the last
  read and joins the rest.
"""

from __future__ import annotations

import functools
import heapq
import json
from dataclasses import dataclass, replace
from ipaddress import AddressValueError, IPv4Address, IPv4Network, IPv6Address
from typing import TYPE_CHECKING, Any

import msgpack
import tomli_w

from vxnet.config import ConfigError, MasterConfig, parse_config, parse_mac
from vxnet.records import AgentInfo, AgentOverlay, Bridge, OverlayInfo, State, Status, VxLAN

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from ipaddress import IPv6Network

    from vxnet.config import NetworkConfig, Overlay

__all__ = ["Allocator", "Outcome", "agent_address_problem", "network_json"]

_FAILURE_KINDS = ("subnet_exhausted", "vtep_exhausted", "bad_command", "unknown_network")
_SNAPSHOT_FORMAT = "vxnet-allocator"
_SNAPSHOT_VERSION = 1
_LISTED_IPS = 10  # problem texts name this many agents, then say how many more
_COMMAND_KEYS = {
    "register": ("op", "ip", "networks", "mesos_bridge", "docker_bridge"),
    "delete": ("op", "ips"),
    "network": ("op", "network"),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one entry did.

    Attributes:
        ok: Whether the command was carried out (a registration with failed networks is ok).
        agent: The agent's AgentInfo after a register.
        error: Why the command was refused.
        changed: Whether the state changed.
    """

    ok: bool
    agent: AgentInfo | None = None
    error: str | None = None
    changed: bool = False


def network_json(network: NetworkConfig) -> dict[str, Any]:
    """The network configuration as JSON, with ``overlay.proto``'s field names (and the
    isolation policy: ``isolation``, ``allow``, each network's ``allow_hosts``)."""
    return {
        "vtep_subnet": str(network.vtep_subnet),
        "vtep_subnet6": str(network.vtep_subnet6),
        "vtep_mac_oui": network.vtep_mac_oui,
        "vtep_mtu": network.vtep_mtu,
        "overlay_mtu": network.overlay_mtu,
        "vni": network.vni,
        "vxlan_port": network.vxlan_port,
        "overlays": [_overlay_info(o) for o in network.overlays],
        "isolation": network.isolation,
        "allow": [{"from": a.source, "to": a.to, "ports": list(a.ports)} for a in network.allow],
    }


def _overlay_info(o: Overlay) -> dict[str, Any]:
    info = _overlay_record(o).to_json()
    if o.allow_hosts:
        info["allow_hosts"] = list(o.allow_hosts)
    return info


def _halves(
    space: IPv4Network | IPv6Network | None,
    prefix: int,
    index: int | None,
    text: Callable[[int], str],
) -> tuple[str | None, str | None, str | None]:
    """Agent subnet ``index`` of ``space`` (``prefix`` long) and the first address of each half
    (the Mesos bridge's, the Docker bridge's), each with its prefix; Nones without one."""
    if space is None or index is None:
        return None, None, None
    size = 1 << (space.max_prefixlen - prefix)
    base = int(space.network_address) + index * size
    return (
        f"{text(base)}/{prefix}",
        f"{text(base + 1)}/{prefix + 1}",
        f"{text(base + size // 2 + 1)}/{prefix + 1}",
    )


def _overlay_record(o: Overlay) -> OverlayInfo:
    v4, v6 = o.subnet is not None, o.subnet6 is not None
    return OverlayInfo(
        name=o.name,
        subnet=str(o.subnet) if v4 else None,
        prefix=o.prefix if v4 else None,
        subnet6=str(o.subnet6) if v6 else None,
        prefix6=o.prefix6 if v6 else None,
    )


def _encode(value: object) -> bytes:
    """Compact JSON, as the API sends it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class _Refused(Exception):
    """A command that cannot be carried out; ``kind`` is the failure counted, if any."""

    def __init__(self, kind: str | None, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _Pool:
    """Indexes ``0 .. size-1``: a heap of disjoint free ranges ``(start, end)`` and a used count."""

    __slots__ = ("_free", "size", "used")

    def __init__(self, size: int, used: Iterable[int] = ()) -> None:
        """A pool with ``used`` taken.

        Raises:
            ValueError: An index is out of range or taken twice.
        """
        self.size = size
        taken = sorted(used)
        self.used = len(taken)
        self._free: list[tuple[int, int]] = []
        start = 0
        for index in taken:
            if not start <= index < size:
                raise ValueError(f"index {index} is out of range 0..{size - 1} or held twice")
            if start < index:
                self._free.append((start, index))
            start = index + 1
        if start < size:
            self._free.append((start, size))

    def peek(self) -> int | None:
        return self._free[0][0] if self._free else None

    def take(self, index: int) -> None:
        start, end = self._free[0]
        if start != index:
            raise AssertionError(f"pool handed out {index}, but {start} is the lowest free")
        if start + 1 < end:
            self._free[0] = (start + 1, end)  # still below every other range: the heap holds
        else:
            heapq.heappop(self._free)
        self.used += 1

    def release(self, index: int) -> None:
        heapq.heappush(self._free, (index, index + 1))
        self.used -= 1

    def counts(self, suffix: str = "") -> dict[str, int]:
        return {
            f"total{suffix}": self.size,
            f"used{suffix}": self.used,
            f"free{suffix}": self.size - self.used,
        }


@dataclass(frozen=True, slots=True)
class _Held:
    """One network of an agent: its subnet indexes, or the error that kept it from getting them."""

    index4: int | None
    index6: int | None
    mesos_bridge: bool
    docker_bridge: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Agent:
    """What one agent holds: VTEP address indexes and its networks by name."""

    vtep: int
    vtep6: int | None
    overlays: Mapping[str, _Held]


@dataclass(slots=True)
class _Space:
    """One network's pools (``None`` for a family it does not have)."""

    overlay: Overlay
    pool4: _Pool | None
    pool6: _Pool | None


@dataclass(frozen=True, slots=True)
class _Request:
    ip: int
    wanted: tuple[str, ...] | None
    mesos_bridge: bool
    docker_bridge: bool


def _v4(address: int) -> str:
    return f"{address >> 24}.{address >> 16 & 255}.{address >> 8 & 255}.{address & 255}"


def _v6(address: int) -> str:
    return str(IPv6Address(address))


def _ips(ips: Sequence[int]) -> str:
    shown = ", ".join(_v4(ip) for ip in ips[:_LISTED_IPS])
    more = len(ips) - _LISTED_IPS
    return f"{shown} and {more} more" if more > 0 else shown


def _agents_count(n: int) -> str:
    return f"{n} agent holds" if n == 1 else f"{n} agents hold"


def _pack(body: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise _Refused(
            "bad_command", f"{what} is not msgpack ({str(exc) or type(exc).__name__})"
        ) from exc


def _type_name(value: object) -> str:
    return "nil" if value is None else type(value).__name__


def _names(value: Sequence[str] | None, what: str) -> list[str] | None:
    if isinstance(value, str):
        raise TypeError(f"{what} must be a sequence of strings, not a string")
    return None if value is None else list(value)


def _register_body(
    ip: str, networks: Sequence[str] | None, mesos_bridge: bool, docker_bridge: bool
) -> dict[str, Any]:
    return {
        "op": "register",
        "ip": ip,
        "networks": _names(networks, "networks"),
        "mesos_bridge": mesos_bridge,
        "docker_bridge": docker_bridge,
    }


def _check_keys(body: dict[str, Any], op: str) -> None:
    expected = _COMMAND_KEYS[op]
    unknown = [k for k in body if k not in expected]
    if unknown:
        raise _Refused("bad_command", f"{op}: unknown key {unknown[0]!r}")
    missing = [k for k in expected if k not in body]
    if missing:
        raise _Refused("bad_command", f"{op}: missing key {missing[0]!r}")


_NOT_AGENTS = (
    (IPv4Network("0.0.0.0/8"), "an unspecified address"),
    (IPv4Network("127.0.0.0/8"), "a loopback address"),
    (IPv4Network("169.254.0.0/16"), "a link-local address"),
    (IPv4Network("224.0.0.0/4"), "a multicast address"),
    (IPv4Network("255.255.255.255/32"), "the broadcast address"),
    (IPv4Network("240.0.0.0/4"), "a reserved address"),
)
_STATE_OK = State(Status.OK)
_NOT_AGENT_MASKS = tuple(
    (int(net.network_address), int(net.netmask), what) for net, what in _NOT_AGENTS
)


def agent_address_problem(ip: str) -> str | None:
    """Why ``ip`` cannot be an agent's address: no host can be reached there from
    other hosts (unspecified, loopback, link-local, multicast, broadcast, reserved); else None.

    Checked where a registration is asked for (the API, the service), before anything is written
    to the log: applying the log stays the same for every version, entries written before this
    check included.
    """
    key = _parse_v4(ip)
    if key is None:
        return None  # not an address at all: refused as such where the entry is applied
    for base, mask, what in _NOT_AGENT_MASKS:
        if key & mask == base:
            return f"{ip!r} cannot be an agent's address: it is {what}"
    return None


def _agent_ip(value: object, op: str) -> int:
    if not isinstance(value, str):
        raise _Refused("bad_command", f"{op}: agent ip must be a string, got {_type_name(value)}")
    ip = _parse_v4(value)
    if ip is None:
        raise _Refused("bad_command", f"{op}: agent ip {value!r} is not an IPv4 address")
    return ip


@functools.lru_cache(maxsize=4096)
def _parse_v4(text: str) -> int | None:
    """``text`` as an IPv4 address, or ``None``; cached, since a registration's address is read
    when it is checked, when it is applied, and again on every master."""
    try:
        return int(IPv4Address(text))
    except AddressValueError:
        return None


def _string_list(value: object, op: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Refused("bad_command", f"{op}: {key} must be a list of strings")
    return value


def _load_network(data: object) -> tuple[NetworkConfig | None, list[str]]:
    """Build and check a network configuration from :func:`network_json` data.

    The configuration loader's rules are the ones a master's file must pass, so data is put
    through it as the ``[network]`` table of a master's file.
    """
    try:
        text = tomli_w.dumps({"network": data})
        config = parse_config(text, source="network", role="master")
    except (TypeError, ValueError, RecursionError) as exc:
        return None, [f"not a network configuration ({exc})"]
    except ConfigError as exc:
        return None, [f"{p.key}: {p.message}" if p.key else p.message for p in exc.problems]
    if not isinstance(config, MasterConfig):
        raise AssertionError("parse_config with role master returned an agent configuration")
    return config.network, []


def _overlay_changes(old: Overlay, new: Overlay) -> list[tuple[str, object, object]]:
    changes: list[tuple[str, object, object]] = []
    if old.subnet != new.subnet:
        changes.append(("subnet", old.subnet or "none", new.subnet or "none"))
    if old.subnet is not None and new.subnet is not None and old.prefix != new.prefix:
        changes.append(("prefix", old.prefix, new.prefix))
    if old.subnet6 != new.subnet6:
        changes.append(("subnet6", old.subnet6 or "none", new.subnet6 or "none"))
    if old.subnet6 is not None and new.subnet6 is not None and old.prefix6 != new.prefix6:
        changes.append(("prefix6", old.prefix6, new.prefix6))
    return changes


class Allocator:
    """The replicated allocation state: the network configuration and what every agent holds.

    Attributes:
        network: The network configuration in force.
        registrations: Register entries applied that allocated or changed something.
        failures: Refusals and failed allocations by kind: ``subnet_exhausted`` (per network),
            ``vtep_exhausted``, ``bad_command`` and ``unknown_network``.
    """

    def __init__(self, network: NetworkConfig) -> None:
        """Start with no agents.

        Raises:
            ValueError: The network configuration breaks a configuration rule.
        """
        _, problems = _load_network(network_json(network))
        if problems:
            raise ValueError("invalid network configuration: " + "; ".join(problems))
        self.network = network
        self.registrations = 0
        self.failures: dict[str, int] = dict.fromkeys(_FAILURE_KINDS, 0)
        self._agents: dict[int, _Agent] = {}
        self._encoded: dict[int, bytes] = {}  # agent -> its AgentInfo JSON, while unchanged
        self._rows: dict[int, tuple[_Agent, dict[str, Any]]] = {}  # snapshot rows, per agent
        self._order: list[int] | None = []  # the agents in numeric order; None when stale
        self._install(network)

    # --- commands -------------------------------------------------------------------------------

    @staticmethod
    def register_command(
        ip: str,
        networks: Sequence[str] | None,
        mesos_bridge: bool = True,
        docker_bridge: bool = True,
    ) -> bytes:
        """The entry registering agent ``ip`` for ``networks`` (``None``: every network).

        Raises:
            TypeError: ``networks`` is a string rather than a sequence of names.
        """
        return _pack(_register_body(ip, networks, mesos_bridge, docker_bridge))

    @staticmethod
    def delete_command(ips: Sequence[str]) -> bytes:
        """The entry deleting the agents ``ips`` and freeing what they hold.

        Raises:
            TypeError: ``ips`` is a string rather than a sequence of addresses.
        """
        return _pack({"op": "delete", "ips": _names(ips, "ips")})

    @staticmethod
    def network_command(network: NetworkConfig) -> bytes:
        """The entry replacing the network configuration in force with ``network``."""
        return _pack({"op": "network", "network": network_json(network)})

    def apply(self, entry: bytes, *, answer: bool = True) -> Outcome:
        """Apply one log entry; a refused entry changes nothing but the failure counts.

        ``answer=False`` leaves a registration's ``Outcome.agent`` out (a master with no request
        waiting on the entry skips building it).
        """
        try:
            body = _unpack(entry, "entry")
            if not isinstance(body, dict) or not isinstance(body.get("op"), str):
                raise _Refused(
                    "bad_command",
                    f"entry: expected a map with a string 'op', got {_type_name(body)}",
                )
            op = body["op"]
            if op not in _COMMAND_KEYS:
                raise _Refused("bad_command", f"entry: unknown command {op!r}")
            _check_keys(body, op)
            if op == "register":
                return self._register(self._request(body), answer)
            if op == "delete":
                return self._delete(body["ips"])
            return self._change_network(body["network"])
        except _Refused as refused:
            if refused.kind is not None:
                self.failures[refused.kind] += 1
            return Outcome(ok=False, error=refused.message)

    # --- queries --------------------------------------------------------------------------------

    @property
    def agent_count(self) -> int:
        """How many agents hold allocations."""
        return len(self._agents)

    def agent_info(self, ip: str) -> AgentInfo | None:
        """The AgentInfo of agent ``ip``, or ``None`` for an unknown agent or a bad address."""
        try:
            key = int(IPv4Address(ip))
        except AddressValueError:
            return None
        agent = self._agents.get(key)
        return None if agent is None else self._info(key, agent)

    def satisfied(
        self,
        ip: str,
        networks: Sequence[str] | None,
        mesos_bridge: bool = True,
        docker_bridge: bool = True,
    ) -> bool:
        """Whether applying this registration would change nothing (so needs no log entry).

        An unknown agent, or a request that would be refused, is never satisfied.

        Raises:
            TypeError: ``networks`` is a string rather than a sequence of names.
        """
        key = _parse_v4(ip)
        if key is None or key not in self._agents:
            return False  # a new agent (the common case) costs no planning
        body = _register_body(ip, networks, mesos_bridge, docker_bridge)
        try:
            request = self._request(body)
            old = self._agents[request.ip]
            new, _ = self._plan(request, old)
        except _Refused:
            return False
        return new == old

    def state(self) -> dict[str, Any]:
        """The network configuration and every agent's AgentInfo JSON, by agent IP in numeric
        order."""
        return {
            "network": network_json(self.network),
            "agents": [self._info(ip, self._agents[ip]).to_json() for ip in sorted(self._agents)],
        }

    def state_json(self, *, free: bool = False) -> bytes:
        """:meth:`state` as compact JSON (with :meth:`free_counts` under ``free`` if asked).

        Only agents changed since the last call are encoded; the others' JSON is reused.
        """
        if self._order is None:
            self._order = sorted(self._agents)
        encoded = self._encoded
        pieces = []
        for ip in self._order:
            piece = encoded.get(ip)
            if piece is None:
                piece = encoded[ip] = _encode(self._info(ip, self._agents[ip]).to_json())
            pieces.append(piece)
        tail = b"}" if not free else b',"free":' + _encode(self.free_counts()) + b"}"
        return b"".join(
            (
                b'{"network":',
                _encode(network_json(self.network)),
                b',"agents":[',
                b",".join(pieces),
                b"]",
                tail,
            )
        )

    def free_counts(self) -> dict[str, dict[str, int]]:
        """Total, used and free subnets per network, and VTEP addresses under the key ``vtep``.

        A network's IPv4 counts are ``total``, ``used`` and ``free``, its IPv6 ones ``total6``,
        ``used6`` and ``free6``; each is present when the network has that family.
        """
        counts: dict[str, dict[str, int]] = {}
        for o in self.network.overlays:
            space = self._spaces[o.name]
            entry: dict[str, int] = {}
            if space.pool4 is not None:
                entry.update(space.pool4.counts())
            if space.pool6 is not None:
                entry.update(space.pool6.counts("6"))
            counts[o.name] = entry
        counts["vtep"] = self._vtep.counts() | self._vtep6.counts("6")
        return counts

    def network_change_problems(self, new: NetworkConfig) -> list[str]:
        """Why ``new`` cannot replace the network configuration in force; empty when it can."""
        _, problems = _load_network(network_json(new))
        return problems or self._change_problems(new)

    # --- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as bytes that depend only on the state."""
        order = [o.name for o in self.network.overlays]
        rows = self._rows
        agents = []
        for ip in sorted(self._agents):
            agent = self._agents[ip]
            cached = rows.get(ip)
            if cached is not None and cached[0] is agent:  # agents are replaced, never changed
                agents.append(cached[1])
                continue
            held = [
                [name, h.index4, h.index6, h.mesos_bridge, h.docker_bridge, h.error]
                for name in order
                if (h := agent.overlays.get(name)) is not None
            ]
            row = {"ip": _v4(ip), "vtep": agent.vtep, "vtep6": agent.vtep6, "overlays": held}
            rows[ip] = (agent, row)
            agents.append(row)
        if len(rows) > len(agents):  # deleted agents' rows
            self._rows = {ip: rows[ip] for ip in self._agents}
        return _pack(
            {
                "format": _SNAPSHOT_FORMAT,
                "version": _SNAPSHOT_VERSION,
                "network": network_json(self.network),
                "registrations": self.registrations,
                "failures": dict(self.failures),
                "agents": agents,
            }
        )

    @classmethod
    def restore(cls, data: bytes) -> Allocator:
        """The allocator a :meth:`snapshot` was taken of.

        Raises:
            ValueError: ``data`` is not a snapshot of an allocator.
        """
        try:
            return cls._restore(data)
        except _Refused as exc:
            raise ValueError(f"not an allocator snapshot: {exc.message}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an allocator snapshot: {exc!r}") from None

    @classmethod
    def _restore(cls, data: bytes) -> Allocator:
        body = _unpack(data, "snapshot")
        if not isinstance(body, dict) or body.get("format") != _SNAPSHOT_FORMAT:
            raise ValueError("no snapshot format marker")
        if body["version"] != _SNAPSHOT_VERSION:
            raise ValueError(f"version {body['version']!r}; this allocator reads 1")
        network, problems = _load_network(body["network"])
        if network is None:
            raise ValueError("; ".join(problems))
        allocator = cls(network)
        registrations, failures = body["registrations"], body["failures"]
        if not isinstance(registrations, int) or not isinstance(failures, dict):
            raise TypeError("bad counters")
        if sorted(failures) != sorted(_FAILURE_KINDS) or not all(
            isinstance(v, int) for v in failures.values()
        ):
            raise ValueError(f"bad failure counts {failures!r}")
        allocator.registrations = registrations
        allocator.failures = {kind: failures[kind] for kind in _FAILURE_KINDS}
        overlays = {o.name: o for o in network.overlays}
        for record in body["agents"]:
            ip = _agent_ip(record["ip"], "snapshot")
            if ip in allocator._agents:
                raise ValueError(f"agent {record['ip']} appears twice")
            vtep, vtep6 = record["vtep"], record["vtep6"]
            if not isinstance(vtep, int) or not isinstance(vtep6, int | None):
                raise TypeError(f"agent {record['ip']}: bad VTEP indexes")
            held: dict[str, _Held] = {}
            for name, index4, index6, mesos, docker, error in record["overlays"]:
                o = overlays[name]
                if not all(isinstance(v, int | None) for v in (index4, index6)):
                    raise TypeError(f"agent {record['ip']}: network {name}: bad subnet indexes")
                if error is None:
                    if (index4 is None) != (o.subnet is None) or (index6 is None) != (
                        o.subnet6 is None
                    ):
                        raise ValueError(f"agent {record['ip']}: network {name} is half allocated")
                elif not isinstance(error, str) or index4 is not None or index6 is not None:
                    raise ValueError(f"agent {record['ip']}: failed network {name} holds subnets")
                if not isinstance(mesos, bool) or not isinstance(docker, bool):
                    raise TypeError(f"agent {record['ip']}: network {name}: bad bridge flags")
                held[name] = _Held(index4, index6, mesos, docker, error)
            if any(h.index6 is not None for h in held.values()) and vtep6 is None:
                raise ValueError(f"agent {record['ip']} holds IPv6 subnets but no VTEP IPv6")
            allocator._agents[ip] = _Agent(vtep, vtep6, held)
        allocator._rebuild()
        return allocator

    # --- applying -------------------------------------------------------------------------------

    def _request(self, body: dict[str, Any]) -> _Request:
        ip = _agent_ip(body["ip"], "register")
        networks = body["networks"]
        wanted: tuple[str, ...] | None = None
        if networks is not None:
            wanted = tuple(dict.fromkeys(_string_list(networks, "register", "networks")))
            unknown = [n for n in wanted if n not in self._spaces]
            if unknown:
                known = ", ".join(o.name for o in self.network.overlays)
                plural = "s" if len(unknown) > 1 else ""
                listed = ", ".join(map(repr, unknown))
                raise _Refused(
                    "unknown_network",
                    f"register: unknown network{plural} {listed} (known: {known})",
                )
        flags = (body["mesos_bridge"], body["docker_bridge"])
        if not all(isinstance(flag, bool) for flag in flags):
            raise _Refused(
                "bad_command", "register: mesos_bridge and docker_bridge must be booleans"
            )
        return _Request(ip, wanted, *flags)

    def _plan(self, request: _Request, old: _Agent | None) -> tuple[_Agent, int]:
        """The agent after ``request``, and how many networks found no free subnet.

        Raises:
            _Refused: A VTEP address the agent needs is not free.
        """
        vtep = old.vtep if old is not None else self._vtep.peek()
        if vtep is None:
            raise self._vtep_exhausted("vtep_subnet", self.network.vtep_subnet, self._vtep)
        overlays = dict(old.overlays) if old is not None else {}
        wanted = request.wanted
        failed = 0
        for o in self.network.overlays:
            held = overlays.get(o.name)
            asked = wanted is None or o.name in wanted
            if held is None and not asked:
                continue
            if asked or held is None:
                mesos, docker = request.mesos_bridge, request.docker_bridge
            else:
                mesos, docker = held.mesos_bridge, held.docker_bridge
            if held is not None and held.error is None:
                overlays[o.name] = replace(held, mesos_bridge=mesos, docker_bridge=docker)
                continue
            space = self._spaces[o.name]
            index4 = space.pool4.peek() if space.pool4 is not None else None
            index6 = space.pool6.peek() if space.pool6 is not None else None
            error = None
            if space.pool4 is not None and index4 is None:
                error = f"{o.name}: no free /{o.prefix} subnet left ({self._in_use(space.pool4)})"
            elif space.pool6 is not None and index6 is None:
                error = f"{o.name}: no free /{o.prefix6} subnet left ({self._in_use(space.pool6)})"
            if error is not None:
                failed += 1
                overlays[o.name] = _Held(None, None, mesos, docker, error)
            else:
                overlays[o.name] = _Held(index4, index6, mesos, docker)
        vtep6 = old.vtep6 if old is not None else None
        if vtep6 is None and any(h.index6 is not None for h in overlays.values()):
            vtep6 = self._vtep6.peek()
            if vtep6 is None:
                raise self._vtep_exhausted("vtep_subnet6", self.network.vtep_subnet6, self._vtep6)
        return _Agent(vtep, vtep6, overlays), failed

    @staticmethod
    def _in_use(pool: _Pool) -> str:
        return f"{pool.used} of {pool.size} in use"

    def _vtep_exhausted(self, key: str, subnet: object, pool: _Pool) -> _Refused:
        return _Refused(
            "vtep_exhausted", f"{key} {subnet}: no free VTEP address left ({self._in_use(pool)})"
        )

    def _register(self, request: _Request, answer: bool) -> Outcome:
        old = self._agents.get(request.ip)
        new, failed = self._plan(request, old)
        self.failures["subnet_exhausted"] += failed
        if new == old:
            return Outcome(ok=True, agent=self._info(request.ip, new) if answer else None)
        if old is None:
            self._vtep.take(new.vtep)
        if new.vtep6 is not None and (old is None or old.vtep6 is None):
            self._vtep6.take(new.vtep6)
        for name, held in new.overlays.items():
            before = old.overlays.get(name) if old is not None else None
            if before is not None and before.error is None:
                continue
            space = self._spaces[name]
            if space.pool4 is not None and held.index4 is not None:
                space.pool4.take(held.index4)
            if space.pool6 is not None and held.index6 is not None:
                space.pool6.take(held.index6)
        if old is None:
            self._order = None
        self._agents[request.ip] = new
        self._encoded.pop(request.ip, None)
        self.registrations += 1
        agent = self._info(request.ip, new) if answer else None
        return Outcome(ok=True, agent=agent, changed=True)

    def _delete(self, value: object) -> Outcome:
        ips = [_agent_ip(ip, "delete") for ip in _string_list(value, "delete", "ips")]
        changed = False
        for ip in dict.fromkeys(ips):
            agent = self._agents.pop(ip, None)
            if agent is None:
                continue
            changed = True
            self._encoded.pop(ip, None)
            self._order = None
            self._vtep.release(agent.vtep)
            if agent.vtep6 is not None:
                self._vtep6.release(agent.vtep6)
            for name, held in agent.overlays.items():
                space = self._spaces[name]
                if space.pool4 is not None and held.index4 is not None:
                    space.pool4.release(held.index4)
                if space.pool6 is not None and held.index6 is not None:
                    space.pool6.release(held.index6)
        return Outcome(ok=True, changed=changed)

    def _change_network(self, value: object) -> Outcome:
        new, problems = _load_network(value)
        if new is None:
            raise _Refused("bad_command", "network: invalid configuration: " + "; ".join(problems))
        problems = self._change_problems(new)
        if problems:
            raise _Refused(None, "; ".join(problems))
        changed = network_json(new) != network_json(self.network)
        names = {o.name for o in new.overlays}
        for ip, agent in self._agents.items():
            if any(name not in names for name in agent.overlays):
                kept = {n: h for n, h in agent.overlays.items() if n in names}
                self._agents[ip] = replace(agent, overlays=kept)
                changed = True
        self.network = new
        self._install(new)
        return Outcome(ok=True, changed=changed)

    def _change_problems(self, new: NetworkConfig) -> list[str]:
        old = self.network
        ips = sorted(self._agents)
        problems: list[str] = []
        replacements = {o.name: o for o in new.overlays}
        for o in old.overlays:
            holders = [
                ip
                for ip in ips
                if (h := self._agents[ip].overlays.get(o.name)) is not None and h.error is None
            ]
            if not holders:
                continue
            users = f"agents {_ips(holders)} hold subnets in it"
            replacement = replacements.get(o.name)
            if replacement is None:
                problems.append(f"network {o.name}: removed but {users}")
                continue
            problems.extend(
                f"network {o.name}: {key} changes from {before} to {after} but {users}"
                for key, before, after in _overlay_changes(o, replacement)
            )
        if ips and new.vtep_subnet != old.vtep_subnet:
            problems.append(
                f"vtep_subnet: changes from {old.vtep_subnet} to {new.vtep_subnet} but "
                f"{_agents_count(len(ips))} VTEP addresses in it ({_ips(ips)})"
            )
        holders6 = [ip for ip in ips if self._agents[ip].vtep6 is not None]
        if holders6 and new.vtep_subnet6 != old.vtep_subnet6:
            problems.append(
                f"vtep_subnet6: changes from {old.vtep_subnet6} to {new.vtep_subnet6} but "
                f"{_agents_count(len(holders6))} VTEP IPv6 addresses in it ({_ips(holders6)})"
            )
        if ips and parse_mac(new.vtep_mac_oui)[:3] != self._oui:
            problems.append(
                f"vtep_mac_oui: changes from {old.vtep_mac_oui} to {new.vtep_mac_oui} but "
                f"{_agents_count(len(ips))} VTEP MACs under it ({_ips(ips)})"
            )
        return problems

    # --- pools and rendering --------------------------------------------------------------------

    def _install(self, network: NetworkConfig) -> None:
        self._overlay_infos = {o.name: _overlay_record(o) for o in network.overlays}
        self._oui = parse_mac(network.vtep_mac_oui)[:3]
        self._vtep4_base = int(network.vtep_subnet.network_address) + 1
        self._vtep6_base = int(network.vtep_subnet6.network_address) + 1
        self._rebuild()

    def _rebuild(self) -> None:
        """Pools for the network in force, with everything the agents hold taken."""
        network = self.network
        self._encoded = {}
        self._rows = {}
        self._order = None
        agents = [self._agents[ip] for ip in sorted(self._agents)]
        self._vtep = _Pool(network.vtep_subnet.num_addresses - 2, (a.vtep for a in agents))
        self._vtep6 = _Pool(
            network.vtep_subnet6.num_addresses - 1,
            (a.vtep6 for a in agents if a.vtep6 is not None),
        )
        self._spaces: dict[str, _Space] = {}
        for o in network.overlays:
            held = [h for a in agents if (h := a.overlays.get(o.name)) is not None]
            pool4 = pool6 = None
            if o.subnet is not None:
                pool4 = _Pool(
                    1 << (o.prefix - o.subnet.prefixlen),
                    (h.index4 for h in held if h.index4 is not None),
                )
            if o.subnet6 is not None:
                pool6 = _Pool(
                    1 << (o.prefix6 - o.subnet6.prefixlen),
                    (h.index6 for h in held if h.index6 is not None),
                )
            self._spaces[o.name] = _Space(o, pool4, pool6)

    def _info(self, ip: int, agent: _Agent) -> AgentInfo:
        network = self.network
        vtep = self._vtep4_base + agent.vtep
        low = vtep & 0xFFFFFF
        mac = self._oui + low.to_bytes(3, "big")
        vtep_ip6 = None
        if agent.vtep6 is not None:
            vtep6 = self._vtep6_base + agent.vtep6
            vtep_ip6 = f"{_v6(vtep6)}/{network.vtep_subnet6.prefixlen}"
        vxlan = VxLAN(
            vni=network.vni,
            vtep_name=f"vtep{network.vni}",
            vtep_ip=f"{_v4(vtep)}/{network.vtep_subnet.prefixlen}",
            vtep_mac=mac.hex(":"),
            vxlan_port=network.vxlan_port,
            vtep_mtu=network.vtep_mtu,
            vtep_ip6=vtep_ip6,
        )
        overlays = tuple(
            self._overlay_entry(o, self._overlay_infos[o.name], held, vxlan, network.overlay_mtu)
            for o in network.overlays
            if (held := agent.overlays.get(o.name)) is not None
        )
        return AgentInfo(ip=_v4(ip), overlays=overlays)

    @staticmethod
    def _overlay_entry(
        o: Overlay, info: OverlayInfo, held: _Held, vxlan: VxLAN, mtu: int
    ) -> AgentOverlay:
        if held.error is not None:
            return AgentOverlay(info=info, state=State(Status.FAILED, held.error))
        subnet, ip, docker_ip = _halves(o.subnet, o.prefix, held.index4, _v4)
        subnet6, ip6, docker_ip6 = _halves(o.subnet6, o.prefix6, held.index6, _v6)
        mesos = Bridge(f"m-{o.name}", ip, ip6, mtu) if held.mesos_bridge else None
        docker = Bridge(f"d-{o.name}", docker_ip, docker_ip6, mtu) if held.docker_bridge else None
        return AgentOverlay(
            info=info,
            state=_STATE_OK,
            subnet=subnet,
            subnet6=subnet6,
            mesos_bridge=mesos,
            docker_bridge=docker,
            backend=vxlan,
        )
