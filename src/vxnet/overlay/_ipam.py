"""Container addresses on one agent: the CNI half of each network, leased and kept on disk.

The agent's :class:`AddressBook` hands out the addresses behind ``vxnet-ipam`` (the CNI IPAM
plugin). For every network the agent holds a CNI half (the ``mesos_bridge`` addresses of its
AgentInfo: e.g. gateway 9.0.1.1/25, so 9.0.1.0/25, and an IPv6 /81 where the network has one).
A lease gives a container one address of each family the network has; it is keyed by network,
container id and interface name (the CNI spec's identity of an attachment) and carries the task
the container runs (name, framework, ports mapped), from which the agent makes its task record.

Rules:

* Never handed out: the network address, the gateway (the half's first address, which the
  bridge holds), the broadcast address (IPv4), and any address already leased in any network.
* ADD for an attachment that has a lease returns that lease (a runtime retrying an ADD gets the
  same answer); DEL of one that has none is not an error (CNI DEL is idempotent).
* Addresses are taken round-robin: the next free one after the last handed out, so an address
  just released is not reused at once (a late packet for the old container would reach a new one).
* An address the runtime asks for (``IP=`` in ``CNI_ARGS``) is given as asked or refused with
  the reason (outside the agent's range, reserved, held by another container), never replaced.
* A DEL and then an ADD of the same attachment within :data:`REBIND` seconds (``podman network
  reload``, which passes the old MAC but no address) give the container its addresses back.
* Every change is written to disk (a temporary file, fsynced, renamed) *before* it is answered:
  after a crash or restart every lease is there, and none is handed out twice. A file that
  cannot be read is an error naming the file, never a silently empty book.
* When the halves change (a new allocation), leases outside them stay in the book until their
  containers are deleted, and CHECK reports them; new ones come from the new halves.

Sans-IO apart from the file: the clock is passed in, and nothing here knows about sockets.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_interface,
)
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path

    from vxnet.records import AgentInfo

__all__ = [
    "CODE_INTERNAL",
    "CODE_INVALID",
    "CODE_IN_USE",
    "CODE_TRY_AGAIN",
    "AddressBook",
    "Half",
    "IpamError",
    "Lease",
    "halves_from_info",
    "parse_cni_args",
    "task_identity",
]

FORMAT = 1
# CNI error codes (spec 1.0.0): 7 invalid network config, 11 try again later, 999+ plugin's own.
CODE_INVALID = 7
CODE_TRY_AGAIN = 11
CODE_INTERNAL = 999
NO_LEASE = 1000  # CHECK of an attachment without a lease
CODE_IN_USE = 1001  # a requested address another container holds
REBIND = 300.0  # seconds a deleted attachment's addresses come back to it on a new ADD


class IpamError(Exception):
    """An IPAM request failed; ``code``, ``msg`` and ``details`` go back to the runtime."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        self.code = code
        self.msg = msg
        self.details = details
        super().__init__(f"{msg}: {details}" if details else msg)


@dataclass(frozen=True, slots=True)
class Half:
    """A network's CNI half on this agent: the networks and gateways of each family it has."""

    network: str
    subnet: IPv4Network | None = None
    gateway: str | None = None
    subnet6: IPv6Network | None = None
    gateway6: str | None = None


def halves_from_info(info: AgentInfo) -> dict[str, Half]:
    """The CNI half of every network allocated (status OK, with a CNI bridge) in an AgentInfo."""
    halves: dict[str, Half] = {}
    for overlay in info.usable():
        bridge = overlay.mesos_bridge
        if bridge is None:
            continue
        name = overlay.name
        v4 = ip_interface(bridge.ip) if bridge.ip else None
        v6 = ip_interface(bridge.ip6) if bridge.ip6 else None
        halves[name] = Half(
            name,
            IPv4Network(v4.network) if v4 is not None else None,
            str(v4.ip) if v4 is not None else None,
            IPv6Network(v6.network) if v6 is not None else None,
            str(v6.ip) if v6 is not None else None,
        )
    return halves


@dataclass(frozen=True, slots=True)
class Lease:
    """The addresses of one attachment (network, container id, interface) and its task."""

    network: str
    container_id: str
    ifname: str
    ip: str | None  # CIDR, e.g. "9.0.1.2/25"
    ip6: str | None
    task: dict[str, Any] = field(default_factory=dict)  # name, framework, ports_mapped, ...
    created: float = 0.0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.network, self.container_id, self.ifname)


class AddressBook:
    """The leases of one agent, kept in the JSON file ``path``.

    Raises (constructor):
        IpamError: The file exists but cannot be read or is not a lease book (the message names
            the file and what is wrong; nothing is overwritten).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.halves: dict[str, Half] = {}
        self._leases: dict[tuple[str, str, str], Lease] = {}
        self._cursors: dict[str, int] = {}  # "<net>/4" and "<net>/6": offset last handed out
        # attachments deleted lately -> (their lease, when): an ADD of the same attachment soon
        # after gets its addresses back (podman network reload runs DEL, then ADD)
        self._released: dict[tuple[str, str, str], tuple[Lease, float]] = {}
        self._load()

    # --- persistence ----------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IpamError(
                CODE_INTERNAL, f"cannot read the lease file {self.path}", str(exc)
            ) from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"not a format-{FORMAT} lease book")
            for raw in data["leases"]:
                lease = Lease(
                    network=str(raw["network"]),
                    container_id=str(raw["container_id"]),
                    ifname=str(raw["ifname"]),
                    ip=None if raw.get("ip") is None else str(ip_interface(raw["ip"])),
                    ip6=None if raw.get("ip6") is None else str(ip_interface(raw["ip6"])),
                    task=dict(raw.get("task") or {}),
                    created=float(raw.get("created", 0.0)),
                )
                self._leases[lease.key] = lease
            self._cursors = {str(k): int(v) for k, v in data.get("cursors", {}).items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise IpamError(
                CODE_INTERNAL,
                f"the lease file {self.path} is damaged ({exc}); move it aside to start empty "
                "(containers keep their addresses, but the agent forgets them)",
            ) from exc

    def _save(self) -> None:
        data = {
            "format": FORMAT,
            "leases": [asdict(lease) for lease in sorted(self._leases.values(), key=_order)],
            "cursors": dict(sorted(self._cursors.items())),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w") as f:
                json.dump(data, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
        except OSError as exc:
            raise IpamError(
                CODE_INTERNAL, f"cannot write the lease file {self.path}", str(exc)
            ) from exc

    # --- requests -------------------------------------------------------------------------------

    def set_halves(self, halves: Mapping[str, Half]) -> None:
        """Take the CNI halves of a (new) allocation."""
        self.halves = dict(halves)

    def leases(self, network: str | None = None) -> list[Lease]:
        """Every lease (of ``network``), in a stable order."""
        found = [
            lease for lease in self._leases.values() if network is None or lease.network == network
        ]
        return sorted(found, key=_order)

    def add(
        self,
        network: str,
        container_id: str,
        ifname: str,
        task: Mapping[str, Any],
        now: float,
        requested: Sequence[str] = (),
    ) -> Lease:
        """The lease of this attachment: the existing one, or new addresses (saved first).

        ``requested`` are addresses the runtime asked for (``IP=`` in ``CNI_ARGS``: podman's
        ``--ip``, and the old address on ``podman network reload``), at most one per family:
        each is handed out as asked or refused, never replaced by another; a family not asked
        for is taken round-robin.

        Raises:
            IpamError: No such network on this agent (code 7), a requested address that is not
                in the agent's range, is reserved or is not the one the attachment holds (7), is
                held by another container (:data:`CODE_IN_USE`), no free address (code 11, with
                the counts), or the file cannot be written (999; nothing handed out).
        """
        half = self._half(network)
        wanted = self._requested(half, requested)
        existing = self._leases.get((network, container_id, ifname))
        if existing is not None:
            for family, address in wanted.items():
                held = existing.ip if family == 4 else existing.ip6
                if held is None or ip_interface(held).ip != address:
                    holds = held or f"no IPv{family} address"
                    raise IpamError(
                        CODE_INVALID,
                        f"{network}: container {container_id} ({ifname}) holds {holds}, "
                        f"not the {address} asked for",
                    )
            return existing
        if not wanted:
            wanted = self._rebind(network, container_id, ifname, now)
        for address in wanted.values():
            holder = self._holder(address)
            if holder is not None:
                raise IpamError(
                    CODE_IN_USE,
                    f"{network}: {address} is in use",
                    f"by container {holder.container_id} ({holder.ifname}) on network "
                    f"{holder.network}",
                )
        cursors = dict(self._cursors)
        ip = (
            f"{wanted[4]}/{half.subnet.prefixlen}"
            if 4 in wanted and half.subnet is not None
            else self._take(half.subnet, half.gateway, f"{network}/4", cursors)
        )
        ip6 = (
            f"{wanted[6]}/{half.subnet6.prefixlen}"
            if 6 in wanted and half.subnet6 is not None
            else self._take(half.subnet6, half.gateway6, f"{network}/6", cursors)
        )
        lease = Lease(network, container_id, ifname, ip, ip6, dict(task), now)
        self._leases[lease.key] = lease
        old_cursors, self._cursors = self._cursors, cursors
        try:
            self._save()
        except IpamError:
            del self._leases[lease.key]
            self._cursors = old_cursors
            raise
        return lease

    def delete(
        self, network: str, container_id: str, ifname: str, now: float = 0.0
    ) -> Lease | None:
        """Release the lease of this attachment; ``None`` if it had none (not an error).

        For :data:`REBIND` seconds after ``now`` an ADD of the same attachment (the same
        container) gets the same addresses back, where they are still free.

        Raises:
            IpamError: The file cannot be written (the lease is kept).
        """
        lease = self._leases.pop((network, container_id, ifname), None)
        if lease is None:
            return None
        try:
            self._save()
        except IpamError:
            self._leases[lease.key] = lease
            raise
        self._released = {
            k: (old, when) for k, (old, when) in self._released.items() if now - when < REBIND
        }
        self._released[lease.key] = (lease, now)
        return lease

    def check(self, network: str, container_id: str, ifname: str) -> Lease:
        """The lease of this attachment, if it has one within the network's current half.

        Raises:
            IpamError: Unknown network (7), no lease (1000), or a lease outside the half (1000).
        """
        half = self._half(network)
        lease = self._leases.get((network, container_id, ifname))
        if lease is None:
            raise IpamError(
                NO_LEASE,
                f"{network}: container {container_id} ({ifname}) has no address on this agent",
            )
        for address, subnet in ((lease.ip, half.subnet), (lease.ip6, half.subnet6)):
            if (address is None) != (subnet is None) or (
                address is not None
                and subnet is not None
                and ip_interface(address).ip not in subnet
            ):
                raise IpamError(
                    NO_LEASE,
                    f"{network}: container {container_id} holds {address or 'no address'}, "
                    f"which is not in this agent's range {subnet or 'of that family'}",
                )
        return lease

    def usage(self, network: str) -> dict[str, int]:
        """``total``, ``allocated`` and ``free`` addresses of the IPv4 half (and ``total6``,
        ``allocated6``, ``free6`` of the IPv6 one, capped at 2**63 - 1)."""
        half = self._half(network)
        out: dict[str, int] = {}
        for subnet, suffix, family in ((half.subnet, "", 4), (half.subnet6, "6", 6)):
            if subnet is None:
                continue
            total = min(_capacity(subnet), 2**63 - 1)
            used = sum(
                1
                for lease in self._leases.values()
                if lease.network == network
                and (lease.ip if family == 4 else lease.ip6) is not None
                and ip_address(str(lease.ip if family == 4 else lease.ip6).split("/")[0]) in subnet
            )
            out[f"total{suffix}"] = total
            out[f"allocated{suffix}"] = used
            out[f"free{suffix}"] = max(total - used, 0)
        return out

    # --- internals ------------------------------------------------------------------------------

    def _requested(
        self, half: Half, requested: Sequence[str]
    ) -> dict[int, IPv4Address | IPv6Address]:
        """The requested addresses by family, each checked against the half."""
        wanted: dict[int, IPv4Address | IPv6Address] = {}
        for text in requested:
            try:
                address = ip_interface(text.strip()).ip
            except ValueError:
                raise IpamError(
                    CODE_INVALID, f"requested address {text[:80]!r} is not an IP address"
                ) from None
            if address.version in wanted:
                raise IpamError(
                    CODE_INVALID,
                    f"two IPv{address.version} addresses requested ({wanted[address.version]} and "
                    f"{address}); one per family",
                )
            subnet = half.subnet if address.version == 4 else half.subnet6
            gateway = half.gateway if address.version == 4 else half.gateway6
            if subnet is None:
                raise IpamError(
                    CODE_INVALID,
                    f"{half.network}: {address} requested, but the network has no "
                    f"IPv{address.version} range",
                )
            if address not in subnet:
                raise IpamError(
                    CODE_INVALID,
                    f"{half.network}: {address} is not in this agent's range {subnet}",
                    "a container on this agent gets an address of the agent's own range",
                )
            first, last = _first_last(subnet)
            offset = int(address) - int(subnet.network_address)
            if not first <= offset <= last or (
                gateway is not None and address == ip_address(gateway)
            ):
                raise IpamError(
                    CODE_INVALID,
                    f"{half.network}: {address} is reserved (network, gateway or broadcast "
                    f"address of {subnet})",
                )
            wanted[address.version] = address
        return wanted

    def _rebind(
        self, network: str, container_id: str, ifname: str, now: float
    ) -> dict[int, IPv4Address | IPv6Address]:
        """The addresses this attachment held until a DEL within :data:`REBIND` seconds, where
        still free and in the current half."""
        released = self._released.pop((network, container_id, ifname), None)
        if released is None or not 0 <= now - released[1] < REBIND:
            return {}
        half = self.halves[network]
        out: dict[int, IPv4Address | IPv6Address] = {}
        for held, subnet in ((released[0].ip, half.subnet), (released[0].ip6, half.subnet6)):
            if held is None or subnet is None:
                continue
            address = ip_interface(held).ip
            if address in subnet and self._holder(address) is None:
                out[address.version] = address
        return out

    def _holder(self, address: IPv4Address | IPv6Address) -> Lease | None:
        for lease in self._leases.values():
            for held in (lease.ip, lease.ip6):
                if held is not None and ip_interface(held).ip == address:
                    return lease
        return None

    def _half(self, network: str) -> Half:
        half = self.halves.get(network)
        if half is None:
            known = ", ".join(sorted(self.halves)) or "none yet"
            raise IpamError(
                CODE_INVALID,
                f"network {network!r} is not allocated to this agent (its networks: {known})",
            )
        return half

    def _take(
        self,
        subnet: IPv4Network | IPv6Network | None,
        gateway: str | None,
        cursor_key: str,
        cursors: dict[str, int],
    ) -> str | None:
        if subnet is None:
            return None
        used = self._used(subnet)
        if gateway is not None:
            used.add(int(ip_address(gateway)))
        base = int(subnet.network_address)
        first, last = _first_last(subnet)
        span = last - first + 1
        start = cursors.get(cursor_key, 0)
        # scan at most the whole range once, from just after the cursor
        for step in range(1, min(span, len(used) + 2) + 1):
            offset = (start - first + step) % span + first
            if base + offset not in used:
                cursors[cursor_key] = offset
                return f"{ip_address(base + offset)}/{subnet.prefixlen}"
        network = cursor_key.rsplit("/", 1)[0]
        counts = self.usage(network)
        suffix = "" if subnet.version == 4 else "6"
        raise IpamError(
            CODE_TRY_AGAIN,
            f"{network}: no free address in this agent's range {subnet}",
            f"{counts[f'allocated{suffix}']} of {counts[f'total{suffix}']} in use",
        )

    def _used(self, subnet: IPv4Network | IPv6Network) -> set[int]:
        used: set[int] = set()
        for lease in self._leases.values():
            for address in (lease.ip, lease.ip6):
                if address is not None:
                    value = ip_address(address.split("/")[0])
                    if value.version == subnet.version and value in subnet:
                        used.add(int(value))
        return used


def _first_last(subnet: IPv4Network | IPv6Network) -> tuple[int, int]:
    """Offsets of the first and last assignable addresses (after the network address, before
    the IPv4 broadcast), the gateway included."""
    size = subnet.num_addresses
    last = size - 2 if subnet.version == 4 else size - 1
    return 1, last


def _capacity(subnet: IPv4Network | IPv6Network) -> int:
    first, last = _first_last(subnet)
    return max(last - first, 0)  # minus the gateway


def _order(lease: Lease) -> tuple[str, str, str]:
    return lease.key


def parse_cni_args(text: str) -> dict[str, str]:
    """``CNI_ARGS`` (``K=V;K=V``) as a dict; malformed pieces are skipped."""
    out: dict[str, str] = {}
    for piece in text.split(";"):
        key, sep, value = piece.partition("=")
        if sep and key:
            out[key] = value
    return out


def task_identity(
    container_id: str, cni_args: Mapping[str, str], runtime_args: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The task a container runs, from what the runtime passed (see the module docstring).

    In order: ``VXNET_TASK``/``VXNET_FRAMEWORK`` in CNI_ARGS; Kubernetes' ``K8S_POD_NAME`` (its
    namespace as the framework; podman passes no namespace: ``podman``); Mesos'
    ``args.org.apache.mesos.network_info`` labels ``vxnet.task``/``vxnet.framework`` (and its
    port mappings); else the container id, framework ``cni``.
    """
    name: str | None = cni_args.get("VXNET_TASK") or None
    framework: str | None = cni_args.get("VXNET_FRAMEWORK") or None
    ports = False
    if name is None and cni_args.get("K8S_POD_NAME"):
        name = cni_args["K8S_POD_NAME"]
        # Kubernetes passes the namespace; podman passes the container's name alone
        framework = framework or cni_args.get("K8S_POD_NAMESPACE") or "podman"
    mesos = (runtime_args or {}).get("org.apache.mesos", {})
    info = mesos.get("network_info", {}) if isinstance(mesos, dict) else {}
    if isinstance(info, dict):
        labels = info.get("labels", {})
        pairs: Iterable[Any] = labels.get("labels", []) if isinstance(labels, dict) else []
        found = {
            str(p.get("key")): str(p.get("value"))
            for p in pairs
            if isinstance(p, dict) and "key" in p
        }
        if name is None and found.get("vxnet.task"):
            name = found["vxnet.task"]
            framework = framework or found.get("vxnet.framework") or "mesos"
        ports = bool(info.get("port_mappings"))
    return {
        "name": name or container_id,
        "framework": framework or "cni",
        "ports_mapped": ports,
    }
