"""The agent's local state as plain values, and the diff that takes the actual one to the desired
one (sans-IO), as :mod:`._model` and :mod:`._diff` do for the objects towards remote agents.

The local state (:class:`LocalState`) is what one agent sets up on its own host for its
allocation:

* devices (:class:`Device`): the VxLAN VTEP ``vtep<vni>`` (VNI, UDP port, local address, no
  learning, MTU, MAC, addresses) and a Linux bridge ``m-<net>`` (MTU, addresses) per network
  allocated with a CNI bridge, and the bridge ``vxnet-dns`` without ports holding the DNS
  container addresses; all up;
* sysctls (IPv4 and IPv6 forwarding), by name under ``/proc/sys``;
* the egress NAT ruleset (:class:`Nat`, rendered by :mod:`._nat`);
* files (:class:`ManagedFile`): the CNI network configurations and the IPAM plugin launcher.

Rules of :func:`diff_local` (replace semantics, like the remote diff):

Devices
  A device is matched by name. One of another kind, or a VTEP whose VNI, UDP port or local
  address differ (the kernel cannot change them in place), is deleted and created again. Any
  other difference is changed in place: learning switched off, MTU and MAC set (one request), the
  global addresses made exactly the desired ones, the device set up. An owned device that is not
  desired (a VxLAN device ``vtep*``, a bridge ``m-*`` of a network no longer allocated, or
  ``vxnet-dns`` once no container address is configured) is
  deleted, before anything is created (an old VTEP holds the UDP port a new one needs).
Addresses
  Adds before deletes, so a device never loses its last IPv4 address (the kernel would flush
  every IPv4 route through it), except that an address wanted with another prefix length goes
  first (IPv6 refuses a second address with the same IP).
Sysctls, NAT, files
  A sysctl whose value differs is set. The NAT ruleset is loaded when the one loaded last differs
  or the tables present are not the ones it leaves. A file whose content differs is written; one
  already there that lacks the file's ``mark`` belongs to someone else and is left alone (see
  :func:`foreign_files`). A CNI configuration vxnet wrote (:func:`~._cni.is_managed`) that is no
  longer desired is removed.
Order
  Stale devices deleted; the devices (VTEP first, then bridges by name), each in the order
  replace, learning, link, addresses, up; sysctls by name; files written by path; stale files
  removed by path; NAT. The same states give the same ops, and an unchanged state gives none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_interface
from typing import TYPE_CHECKING

from vxnet.overlay._cni import is_managed

if TYPE_CHECKING:
    from collections.abc import Iterable
    from ipaddress import IPv4Interface, IPv6Interface

__all__ = [
    "BRIDGE_PREFIX",
    "DEVICE_OPS",
    "DNS_DEVICE",
    "VTEP_PREFIX",
    "AddAddress",
    "CreateDevice",
    "DeleteAddress",
    "DeleteDevice",
    "Device",
    "LoadIsolation",
    "LoadNat",
    "LocalOp",
    "LocalState",
    "ManagedFile",
    "Nat",
    "NoLearning",
    "RemoveFile",
    "SetDevice",
    "SetSysctl",
    "SetUp",
    "WriteFile",
    "bridge",
    "device_ops",
    "diff_local",
    "foreign_files",
    "is_owned_device",
    "vtep",
]

VTEP_PREFIX = "vtep"
BRIDGE_PREFIX = "m-"
DNS_DEVICE = "vxnet-dns"  # a bridge without ports holding dns.container_addresses


@dataclass(frozen=True, slots=True)
class Device:
    """A network device: desired (from the allocation) or actual (as read from the kernel).

    ``addresses`` are the global ones in CIDR form, spelt as :func:`ipaddress.ip_interface`
    prints them. ``mac`` ``None`` in a desired device means "the kernel's choice" (bridges);
    ``vni``, ``port`` and ``local`` are a VxLAN device's (``None`` for other kinds).
    """

    name: str
    kind: str  # "vxlan", "bridge", or whatever the kernel says ("veth", ...)
    mtu: int
    addresses: frozenset[str] = frozenset()
    mac: str | None = None
    vni: int | None = None
    port: int | None = None
    local: str | None = None
    learning: bool = False
    up: bool = True


def _addresses(addresses: Iterable[str | None]) -> frozenset[str]:
    return frozenset(str(ip_interface(a)) for a in addresses if a)


def vtep(
    name: str,
    vni: int,
    port: int,
    local: str,
    mac: str,
    mtu: int,
    addresses: Iterable[str | None],
) -> Device:
    """The desired VTEP: ``addresses`` in CIDR form (``None`` entries are skipped)."""
    return Device(
        name,
        "vxlan",
        mtu,
        _addresses(addresses),
        mac=mac.lower(),
        vni=vni,
        port=port,
        local=str(ip_interface(local).ip),
    )


def bridge(name: str, mtu: int, addresses: Iterable[str | None]) -> Device:
    """A desired Linux bridge: ``addresses`` in CIDR form (``None`` entries are skipped)."""
    return Device(name, "bridge", mtu, _addresses(addresses))


def is_owned_device(device: Device) -> bool:
    """Whether an actual device is one vxnet creates (and so may delete when not desired)."""
    return (device.kind == "vxlan" and device.name.startswith(VTEP_PREFIX)) or (
        device.kind == "bridge"
        and (device.name.startswith(BRIDGE_PREFIX) or device.name == DNS_DEVICE)
    )


@dataclass(frozen=True, slots=True)
class Nat:
    """The egress NAT: the ruleset (``None``: not known to be loaded) and the families (``ip``,
    ``ip6``) whose ``vxnet`` table exists (desired: the ones the ruleset leaves)."""

    ruleset: str | None
    families: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ManagedFile:
    """A file the agent writes: its content and mode; ``mark``, when set, is a line every
    version vxnet writes holds, so that a file without it is known to be someone else's."""

    path: str
    text: str
    mode: int = 0o644
    mark: str | None = None


@dataclass(frozen=True, slots=True)
class LocalState:
    """Desired or actual local state.

    In an actual state, ``devices`` holds the desired names and every owned device present;
    ``files`` those of the desired paths that exist and the CNI configurations found beside them
    (``mark`` unset); ``nat`` is ``None`` when it could not be read.
    """

    devices: dict[str, Device] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    nat: Nat | None = None
    files: dict[str, ManagedFile] = field(default_factory=dict)
    scan: tuple[str, ...] = ()  # desired: directories where stale CNI configurations are found
    # the isolation table (:mod:`._isolation`): desired None while the policy is not known yet
    isolation: Nat | None = None


# --- ops ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeleteDevice:
    name: str


@dataclass(frozen=True, slots=True)
class CreateDevice:
    """Create ``device`` with its kind, VxLAN settings (learning off), MTU and MAC; no
    addresses, down."""

    device: Device


@dataclass(frozen=True, slots=True)
class NoLearning:
    name: str


@dataclass(frozen=True, slots=True)
class SetDevice:
    """Set the MTU and/or the MAC (``None``: unchanged) of device ``name``."""

    name: str
    mtu: int | None = None
    mac: str | None = None


@dataclass(frozen=True, slots=True)
class AddAddress:
    name: str
    address: str  # CIDR


@dataclass(frozen=True, slots=True)
class DeleteAddress:
    name: str
    address: str  # CIDR


@dataclass(frozen=True, slots=True)
class SetUp:
    name: str


@dataclass(frozen=True, slots=True)
class SetSysctl:
    name: str  # under /proc/sys, e.g. "net/ipv4/ip_forward"
    value: str


@dataclass(frozen=True, slots=True)
class WriteFile:
    file: ManagedFile


@dataclass(frozen=True, slots=True)
class RemoveFile:
    path: str


@dataclass(frozen=True, slots=True)
class LoadNat:
    nat: Nat


@dataclass(frozen=True, slots=True)
class LoadIsolation:
    isolation: Nat


LocalOp = (
    DeleteDevice
    | CreateDevice
    | NoLearning
    | SetDevice
    | AddAddress
    | DeleteAddress
    | SetUp
    | SetSysctl
    | WriteFile
    | RemoveFile
    | LoadNat
    | LoadIsolation
)

DEVICE_OPS = (DeleteDevice, CreateDevice, NoLearning, SetDevice, AddAddress, DeleteAddress, SetUp)


# --- the diff -------------------------------------------------------------------------------------


def device_ops(want: Device, have: Device | None) -> list[LocalOp]:
    """The ops that make device ``have`` (``None``: absent) the device ``want``."""
    ops: list[LocalOp] = []
    if have is not None and (have.kind != want.kind or _fixed(have) != _fixed(want)):
        ops.append(DeleteDevice(want.name))
        have = None
    if have is None:
        ops.append(CreateDevice(want))
        have = Device(want.name, want.kind, want.mtu, mac=want.mac, up=False)
    if want.kind == "vxlan" and have.learning:
        ops.append(NoLearning(want.name))
    mtu = want.mtu if have.mtu != want.mtu else None
    mac = want.mac if want.mac is not None and have.mac != want.mac else None
    if mtu is not None or mac is not None:
        ops.append(SetDevice(want.name, mtu, mac))
    ops.extend(_address_ops(want.name, want.addresses, have.addresses))
    if not have.up:
        ops.append(SetUp(want.name))
    return ops


def _fixed(device: Device) -> tuple[int | None, int | None, str | None]:
    """What the kernel cannot change in place: a VxLAN device's VNI, UDP port, local address."""
    return (device.vni, device.port, device.local) if device.kind == "vxlan" else (None, None, None)


def _address_ops(name: str, wanted: frozenset[str], held: frozenset[str]) -> list[LocalOp]:
    want = {ip_interface(a) for a in wanted}
    have = {ip_interface(a) for a in held}
    wanted_ips = {a.ip for a in want}
    stale: list[IPv4Interface | IPv6Interface] = sorted(
        have - want, key=lambda a: (a.ip not in wanted_ips, str(a))
    )
    first = [a for a in stale if a.ip in wanted_ips]
    ops: list[LocalOp] = [DeleteAddress(name, str(a)) for a in first]
    ops += [AddAddress(name, str(a)) for a in sorted(want - have, key=str)]
    ops += [DeleteAddress(name, str(a)) for a in stale[len(first) :]]
    return ops


def diff_local(desired: LocalState, actual: LocalState) -> list[LocalOp]:
    """The ops that take ``actual`` to ``desired``, in the order they are to be carried out
    (see the module's rules); empty when nothing differs."""
    ops: list[LocalOp] = []
    for name in sorted(actual.devices):
        if name not in desired.devices and is_owned_device(actual.devices[name]):
            ops.append(DeleteDevice(name))
    order = sorted(desired.devices.values(), key=lambda d: (d.kind != "vxlan", d.name))
    for device in order:
        ops.extend(device_ops(device, actual.devices.get(device.name)))
    for name in sorted(desired.sysctls):
        if actual.sysctls.get(name) != desired.sysctls[name]:
            ops.append(SetSysctl(name, desired.sysctls[name]))
    for path in sorted(desired.files):
        file, held = desired.files[path], actual.files.get(path)
        if held is not None and (_foreign(file, held) or _same(held, file)):
            continue
        ops.append(WriteFile(file))
    for path in sorted(actual.files):
        if path not in desired.files and is_managed(actual.files[path].text):
            ops.append(RemoveFile(path))
    if desired.nat is not None and actual.nat != desired.nat:
        ops.append(LoadNat(desired.nat))
    if desired.isolation is not None and actual.isolation != desired.isolation:
        ops.append(LoadIsolation(desired.isolation))
    return ops


def foreign_files(desired: LocalState, actual: LocalState) -> list[str]:
    """The desired paths held by a file that is not vxnet's (left alone by :func:`diff_local`)."""
    return [
        path
        for path, file in sorted(desired.files.items())
        if path in actual.files and _foreign(file, actual.files[path])
    ]


def _same(held: ManagedFile, file: ManagedFile) -> bool:
    return (held.text, held.mode) == (file.text, file.mode)


def _foreign(file: ManagedFile, held: ManagedFile) -> bool:
    return file.mark is not None and file.mark not in held.text
