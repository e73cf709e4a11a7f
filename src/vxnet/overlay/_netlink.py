"""The kernel side of the overlay's data plane: devices and owned objects over netlink (I/O).

:class:`Kernel` wraps one pyroute2 socket (``IPRoute()`` in production, a lab host's ``NetNS`` in
tests) and owns:

* the VxLAN device ``vtep<vni>`` and the Linux bridges ``m-<network>``: read as
  :class:`~._local_model.Device` values (:meth:`Kernel.device`, :meth:`Kernel.owned_devices`)
  and changed by the ops of :mod:`._local_model` (:meth:`Kernel.apply_device`);
  :meth:`Kernel.ensure_vtep` and :meth:`Kernel.ensure_bridge` do both for one device, writing
  only what differs (a VTEP whose VNI, port or local address differ is deleted and recreated,
  because the kernel refuses to change VNI and port in place);
* the objects of :mod:`._model` on a VTEP: :meth:`Kernel.read` returns the ones vxnet owns (routes
  of protocol :data:`~._model.ROUTE_PROTOCOL` in the main table, permanent neighbour entries and
  permanent FDB entries with a remote destination, all on that device) and :meth:`Kernel.apply`
  carries out :class:`~._model.Op` one by one, recording a failed op instead of raising.

Requests go through pyroute2; the three dumps of :meth:`Kernel.read` and the link dump of
:meth:`Kernel.owned_devices` are decoded here, on the same socket, because pyroute2's decoding
is 20-30 times slower and leaves cyclic garbage.

What to change is decided elsewhere (:mod:`._diff` and :mod:`._local_model`, sans-IO); this
module only translates. Every netlink request that changes the kernel is counted in
:attr:`Kernel.writes`.

Values read back are normalised as :mod:`._model` writes them: MACs lower case, IPv6 addresses
and networks in :mod:`ipaddress`'s compressed form, route destinations in CIDR form. The desired
state must use the same spelling, or every reconcile would rewrite the objects it spells
differently.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_interface, ip_network
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from vxnet.overlay._local_model import (
    BRIDGE_PREFIX,
    DEVICE_OPS,
    VTEP_PREFIX,
    AddAddress,
    CreateDevice,
    DeleteAddress,
    DeleteDevice,
    Device,
    NoLearning,
    SetDevice,
    bridge,
    device_ops,
    is_owned_device,
    vtep,
)
from vxnet.overlay._model import ROUTE_PROTOCOL, Fdb, KernelState, Neighbour, Op, Route

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from vxnet.overlay._local_model import LocalOp

__all__ = ["EVENT_GROUPS", "ApplyResult", "Kernel", "event_socket", "owned_changes"]

# Kernel ABI constants (linux/neighbour.h, rtnetlink.h, if.h, if_addr.h).
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
RT_TABLE_MAIN = 254
IFF_UP = 0x01
IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253
AF_BRIDGE = 7
ZERO_MAC = "00:00:00:00:00:00"
# Netlink (linux/netlink.h, rtnetlink.h, neighbour.h) for the dumps read() decodes itself.
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_DUMP_INTR = 0x10
DUMP_FLAGS = 0x01 | 0x300  # NLM_F_REQUEST | NLM_F_DUMP
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_DELNEIGH = 29
RTM_GETNEIGH = 30
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15
NDA_DST = 1
IFLA_IFNAME = 3
NDA_LLADDR = 2
NLA_TYPE_MASK = 0x3FFF
RECV_SIZE = 65536  # the kernel builds dump datagrams of at most 32 KiB
DUMP_TIMEOUT = 5.0
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, ...
_NDMSG = struct.Struct("=B3xiHBB")  # family, ifindex, state, flags, type
_RTA = struct.Struct("=HH")  # rtattr: length, type
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# Dump sequence numbers, far from the ones pyroute2 allocates (0xff-0xffff).
SEQ_BASE = 0x7F000000
SEQ_SPAN = 0x01000000
_SEQ = itertools.count()
# A delete whose object is already gone: IPv4 routes answer ESRCH, the others ENOENT.
# Notification groups (rtnetlink.h's RTMGRP_*): links, neighbours, IPv4 and IPv6 routes.
EVENT_GROUPS = 0x1 | 0x4 | 0x40 | 0x400
EVENT_BUFFER = 4 << 20
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change

GONE = frozenset({errno.ENOENT, errno.ESRCH})


@dataclass(slots=True)
class ApplyResult:
    """What :meth:`Kernel.apply` did.

    ``writes`` counts the netlink requests sent (a failed one too); ``errors`` holds one line per
    op the kernel refused (or whose device is missing), naming the op and the error.
    """

    writes: int = 0
    errors: list[str] = field(default_factory=list)


def _attrs(msg: Any) -> dict[str, Any]:
    """A message's attributes by name (the first of a repeated one)."""
    out: dict[str, Any] = {}
    for nla in msg["attrs"]:
        out.setdefault(nla[0], nla[1])
    return out


def _device(link: Any, addresses: frozenset[str]) -> Device:
    """The :class:`~._local_model.Device` of an RTM_NEWLINK message."""
    attrs = _attrs(link)
    info = attrs.get("IFLA_LINKINFO")
    info_attrs = _attrs(info) if info is not None else {}
    kind = str(info_attrs.get("IFLA_INFO_KIND") or "")
    vx: dict[str, Any] = {}
    if kind == "vxlan":
        data = info_attrs.get("IFLA_INFO_DATA")
        vx = _attrs(data) if data is not None else {}
    local = vx.get("IFLA_VXLAN_LOCAL") or vx.get("IFLA_VXLAN_LOCAL6")
    mac = str(attrs.get("IFLA_ADDRESS") or "").lower()
    return Device(
        str(attrs.get("IFLA_IFNAME", "")),
        kind,
        int(attrs.get("IFLA_MTU") or 0),
        addresses,
        mac=mac or None,
        vni=vx.get("IFLA_VXLAN_ID"),
        port=vx.get("IFLA_VXLAN_PORT"),
        local=_ip(str(local)) if local else None,
        learning=bool(vx.get("IFLA_VXLAN_LEARNING")),
        up=bool(link["flags"] & IFF_UP),
    )


def _ip(text: str) -> str:
    """``text`` as the model spells it: IPv4 as is, IPv6 compressed."""
    return str(ip_address(text)) if ":" in text else text


def _ntop(packed: bytes) -> str:
    """A packed IPv4 or IPv6 address as the model spells it."""
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    return str(ip_address(packed))


def _rtattrs(msg: bytes, offset: int) -> dict[int, bytes]:
    """The attributes of a message from ``offset`` on, by type (the first of a repeated one)."""
    attrs: dict[int, bytes] = {}
    end = len(msg)
    while offset + _RTA.size <= end:
        length, kind = _RTA.unpack_from(msg, offset)
        if length < _RTA.size:
            break
        attrs.setdefault(kind & NLA_TYPE_MASK, msg[offset + _RTA.size : offset + length])
        offset += (length + 3) & ~3
    return attrs


def _receive_dump(sock: socket.socket, seq: int) -> tuple[list[bytes], bool]:
    """The payloads of dump ``seq`` up to its end, and whether the kernel found it consistent."""
    payloads: list[bytes] = []
    consistent = True
    while True:
        try:
            buf = sock.recv(RECV_SIZE)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                continue  # notifications overflowed the buffer: lost, but the dump goes on
            raise
        offset = 0
        while offset + _NLMSG.size <= len(buf):
            length, kind, flags, msg_seq, _ = _NLMSG.unpack_from(buf, offset)
            if length < _NLMSG.size:
                break
            start, offset = offset + _NLMSG.size, offset + ((length + 3) & ~3)
            if msg_seq != seq:
                continue  # a notification
            if flags & NLM_F_DUMP_INTR:
                consistent = False
            if kind == NLMSG_DONE:
                return payloads, consistent
            if kind == NLMSG_ERROR:
                code = -_I32.unpack_from(buf, start)[0]
                raise NetlinkError(code)
            payloads.append(buf[start : start + length - _NLMSG.size])


def event_socket() -> socket.socket:
    """A non-blocking netlink socket subscribed to link, neighbour and route notifications.

    Raises:
        OSError: The socket cannot be opened or bound.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, EVENT_BUFFER)
        sock.bind((0, EVENT_GROUPS))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def owned_changes(data: bytes, vtep: int | None, links: Iterable[int]) -> set[str]:
    """What a datagram of notifications says happened to vxnet's objects.

    Returns a subset of ``{"route", "neighbour", "link"}``: an owned route (protocol
    :data:`~._model.ROUTE_PROTOCOL`) was deleted; a neighbour or FDB entry on the VTEP (device
    index ``vtep``) was deleted; one of the devices ``links`` (VTEP and bridges) changed or went
    away. Additions are not reported: vxnet's own writes add, and an added object that vxnet
    does not want is removed at the next full reconcile.
    """
    owned_links = set(links)
    found: set[str] = set()
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _, _, _ = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            break
        body = offset + _NLMSG.size
        offset += (length + 3) & ~3
        if offset > len(data):
            break  # truncated
        if length < _NLMSG.size + _IFINFOMSG.size:
            continue  # too short to be one of these (each also carries attributes)
        if kind == RTM_DELROUTE:
            if _RTMSG.unpack_from(data, body)[5] == ROUTE_PROTOCOL:
                found.add("route")
        elif kind == RTM_DELNEIGH:
            if vtep is not None and _NDMSG.unpack_from(data, body)[1] == vtep:
                found.add("neighbour")
        elif kind in (RTM_NEWLINK, RTM_DELLINK) and (
            _IFINFOMSG.unpack_from(data, body)[2] in owned_links
        ):
            found.add("link")
    return found


class Kernel:
    """The netlink operations of one agent, over the pyroute2 socket ``ipr`` (not owned: the
    caller closes it).

    The socket is used synchronously, one request at a time. A handle opened with ``groups=0``
    (no multicast subscriptions) is best: pyroute2 keeps every notification a subscribed socket
    receives until someone reads it.
    """

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr
        self._writes = 0
        self._recreated = 0

    @property
    def writes(self) -> int:
        """Netlink requests that change the kernel sent so far (devices, addresses, objects)."""
        return self._writes

    @property
    def recreated(self) -> int:
        """Devices deleted and created again because they could not be fixed in place."""
        return self._recreated

    # --- devices --------------------------------------------------------------------------------

    def ensure_vtep(
        self,
        name: str,
        vni: int,
        port: int,
        local: str,
        mac: str,
        address: str,
        address6: str | None,
        mtu: int,
    ) -> None:
        """Make ``name`` a VxLAN device with these settings and addresses, up.

        ``address`` and ``address6`` are interfaces in CIDR form (``"44.128.0.1/20"``); other
        global addresses on the device are removed. Makes no write when all is already so.

        Raises:
            NetlinkError: The kernel refused a step.
        """
        self._converge(vtep(name, vni, port, local, mac, mtu, [address, address6]))

    def ensure_bridge(self, name: str, address: str | None, address6: str | None, mtu: int) -> None:
        """Make ``name`` a Linux bridge with this MTU and these addresses (CIDR), up.

        A device of that name that is not a bridge is replaced. Other global addresses on the
        bridge are removed. Makes no write when all is already so.

        Raises:
            NetlinkError: The kernel refused a step.
        """
        self._converge(bridge(name, mtu, [address, address6]))

    def _converge(self, want: Device) -> None:
        """Read device ``want.name`` and carry out what :func:`~._local_model.device_ops` says."""
        for op in device_ops(want, self.device(want.name)):
            if isinstance(op, DeleteDevice):
                self._recreated += 1
            self.apply_device(op)

    def device(self, name: str) -> Device | None:
        """Device ``name`` as the kernel holds it, or ``None`` if there is none.

        Raises:
            NetlinkError: The kernel refused a request.
        """
        link = self._link(name)
        if link is None:
            return None
        return _device(link, self._addresses(int(link["index"])))

    def owned_devices(self) -> dict[str, Device]:
        """Every device that :func:`~._local_model.is_owned_device` says vxnet created, by name.

        The link dump is decoded here, names only (pyroute2 takes about a millisecond a link,
        and a host has a veth per container); the few devices named like vxnet's are then read
        whole.

        Raises:
            NetlinkError: The kernel refused a dump or a request.
        """
        found: dict[str, Device] = {}
        for msg in self._dump(RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            raw = _rtattrs(msg, _IFINFOMSG.size).get(IFLA_IFNAME, b"")
            name = raw.split(b"\0", 1)[0].decode(errors="replace")
            if not name.startswith((VTEP_PREFIX, BRIDGE_PREFIX)):
                continue
            device = self.device(name)
            if device is not None and is_owned_device(device):
                found[name] = device
        return found

    def apply_device(self, op: LocalOp) -> None:
        """Carry out one device op of :mod:`._local_model` (one netlink request).

        Deleting a device that is already gone does nothing.

        Raises:
            NetlinkError: The kernel refused it, or the device is missing (``ENODEV``).
            ValueError: ``op`` is not a device op, or creates a device of an unknown kind.
        """
        if isinstance(op, CreateDevice):
            self._create(op.device)
            return
        if not isinstance(op, DEVICE_OPS):
            raise ValueError(f"not a device op: {op}")
        index = self.index(op.name)
        if index is None:
            if isinstance(op, DeleteDevice):
                return
            raise NetlinkError(errno.ENODEV, f"no device {op.name!r}")
        if isinstance(op, DeleteDevice):
            self._write(self._ipr.link, "del", index=index)
        elif isinstance(op, NoLearning):
            self._write(self._ipr.link, "set", index=index, kind="vxlan", vxlan_learning=0)
        elif isinstance(op, SetDevice):
            changes: dict[str, Any] = {}
            if op.mtu is not None:
                changes["mtu"] = op.mtu
            if op.mac is not None:
                changes["address"] = op.mac
            self._write(self._ipr.link, "set", index=index, **changes)
        elif isinstance(op, AddAddress | DeleteAddress):
            adding = isinstance(op, AddAddress)
            address = ip_interface(op.address)
            # No duplicate address detection: the master hands out these addresses, and DAD
            # would leave an IPv6 address unusable (tentative) for its first second or two.
            nodad = {"flags": IFA_F_NODAD} if adding and address.version == 6 else {}
            self._write(
                self._ipr.addr,
                "add" if adding else "del",
                index=index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                **nodad,
            )
        else:
            self._write(self._ipr.link, "set", index=index, state="up")

    def _create(self, device: Device) -> None:
        if device.kind == "bridge":
            self._write(self._ipr.link, "add", ifname=device.name, kind="bridge", mtu=device.mtu)
            return
        if device.kind != "vxlan" or device.local is None:
            raise ValueError(f"cannot create {device}")
        local = device.local
        self._write(
            self._ipr.link,
            "add",
            ifname=device.name,
            kind="vxlan",
            vxlan_id=device.vni,
            vxlan_port=device.port,
            **{"vxlan_local6" if ":" in local else "vxlan_local": local},
            vxlan_learning=0,
            mtu=device.mtu,
            **({"address": device.mac} if device.mac else {}),
        )

    def _link(self, name: str) -> Any | None:
        """The RTM_NEWLINK message of device ``name``, or ``None`` if there is none."""
        try:
            return self._ipr.link("get", ifname=name)[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise

    def index(self, name: str) -> int | None:
        """The interface index of device ``name``, or ``None`` if there is none."""
        link = self._link(name)
        return None if link is None else int(link["index"])

    def _addresses(self, index: int) -> frozenset[str]:
        """The global addresses of device ``index`` in CIDR form (link-local ones are left out)."""
        have: set[str] = set()
        for msg in self._ipr.addr("dump", index=index):
            if msg["index"] != index or msg["scope"] == RT_SCOPE_LINK:
                continue
            attrs = _attrs(msg)
            addr = attrs.get("IFA_LOCAL") or attrs.get("IFA_ADDRESS")
            if addr is not None:
                have.add(str(ip_interface(f"{addr}/{msg['prefixlen']}")))
        return frozenset(have)

    # --- owned objects --------------------------------------------------------------------------

    def read(self, dev: str) -> KernelState:
        """The objects vxnet owns on device ``dev`` (empty if there is no such device).

        Three dumps (routes, IPv4 and IPv6 neighbours, FDB), decoded here rather than by pyroute2:
        its messages cost ~70 us and ~20 objects in reference cycles each, which made a read of
        3,000 objects take 0.2-0.3 s plus a 50-100 ms garbage collection later; this takes 10 ms.

        Raises:
            NetlinkError: The kernel refused a dump.
            OSError: The socket failed, or a dump did not finish within 5 s.
        """
        index = self.index(dev)
        if index is None:
            return KernelState()
        routes: set[Route] = set()
        for msg in self._dump(RTM_GETROUTE, _RTMSG.pack(0, 0, 0, 0, 0, 0, 0, 0, 0)):
            family, dst_len, _, _, table, proto, _, _, _ = _RTMSG.unpack_from(msg)
            if proto != ROUTE_PROTOCOL or family not in _FAMILIES:
                continue
            attrs = _rtattrs(msg, _RTMSG.size)
            if RTA_TABLE in attrs:
                table = _U32.unpack(attrs[RTA_TABLE])[0]
            oif = attrs.get(RTA_OIF)
            if table != RT_TABLE_MAIN or oif is None or _U32.unpack(oif)[0] != index:
                continue  # another table or device, or multipath (not vxnet's)
            dst = attrs.get(RTA_DST, bytes(4 if family == socket.AF_INET else 16))
            cidr = f"{socket.inet_ntop(family, dst)}/{dst_len}"
            if family == socket.AF_INET6:
                cidr = str(ip_network(cidr, strict=False))
            gateway = attrs.get(RTA_GATEWAY)
            routes.add(Route(cidr, _ntop(gateway) if gateway else "", dev))
        neighbours: set[Neighbour] = set()
        for family, ip, mac in self._neighbours(socket.AF_UNSPEC, index):
            if family in _FAMILIES:
                neighbours.add(Neighbour(ip, mac, dev))
        fdb: set[Fdb] = set()
        for _, ip, mac in self._neighbours(AF_BRIDGE, index):
            if mac != ZERO_MAC:
                fdb.add(Fdb(mac, ip, dev))
        return KernelState(frozenset(routes), frozenset(neighbours), frozenset(fdb))

    def _neighbours(self, family: int, index: int) -> Iterator[tuple[int, str, str]]:
        """``(family, ip, mac)`` of the permanent entries with both on device ``index``."""
        for msg in self._dump(RTM_GETNEIGH, _NDMSG.pack(family, 0, 0, 0, 0)):
            family, ifindex, state, _, _ = _NDMSG.unpack_from(msg)
            if ifindex != index or not state & NUD_PERMANENT:
                continue
            attrs = _rtattrs(msg, _NDMSG.size)
            ip, mac = attrs.get(NDA_DST), attrs.get(NDA_LLADDR)
            if ip and mac:
                yield family, _ntop(ip), mac.hex(":")

    def _dump(self, msg_type: int, body: bytes) -> list[bytes]:
        """The payloads of a dump's messages, over pyroute2's socket (idle between its calls).

        The socket may also hold notifications (the handle may be subscribed to groups): they
        are skipped, as pyroute2 would only have queued them. A dump the kernel marks
        inconsistent (changed while dumped) is started again, up to 3 times; the third is kept
        whatever it holds (the next reconcile sees what it missed).
        """
        fileno = self._ipr.fileno()
        if callable(fileno):  # pyroute2 0.9's IPRoute.fileno() returns the socket's method
            fileno = fileno()
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE, fileno=os.dup(fileno)
        )
        try:
            sock.settimeout(DUMP_TIMEOUT)  # the descriptor is non-blocking (asyncio) already
            for _ in range(3):
                seq = SEQ_BASE + next(_SEQ) % SEQ_SPAN
                request = _NLMSG.pack(_NLMSG.size + len(body), msg_type, DUMP_FLAGS, seq, 0)
                sock.send(request + body)
                payloads, consistent = _receive_dump(sock, seq)
                if consistent:
                    break
            return payloads
        finally:
            sock.close()

    def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """Carry out ``ops`` in order, one netlink request each.

        A refused op is recorded in the result and the next one goes on. Deleting an object that
        is already gone counts as done. Raises only if the socket itself fails (``OSError``).
        """
        result = ApplyResult()
        writes = self._writes
        indexes: dict[str, int | None] = {}
        for op in ops:
            dev = op.obj.dev
            if dev not in indexes:
                indexes[dev] = self.index(dev)
            index = indexes[dev]
            if index is None:
                result.errors.append(f"{op.action} {op.obj}: no device {dev!r}")
                continue
            try:
                method, kwargs = self._request(op, index)
                self._write(method, "replace" if op.action == "replace" else "del", **kwargs)
            except NetlinkError as exc:
                if op.action == "delete" and exc.code in GONE:
                    continue
                result.errors.append(f"{op.action} {op.obj}: {exc.args[-1]} (errno {exc.code})")
            except (ValueError, TypeError) as exc:  # a bad action, or a value pyroute2 refuses
                result.errors.append(f"{op.action} {op.obj}: {exc}")
        result.writes = self._writes - writes
        return result

    def _request(self, op: Op, index: int) -> tuple[Callable[..., Any], dict[str, Any]]:
        """The pyroute2 method and its arguments for ``op`` on device ``index``."""
        obj = op.obj
        replace = op.action == "replace"
        if op.action not in ("replace", "delete"):
            raise ValueError(f"unknown op action {op.action!r}")
        if isinstance(obj, Route):
            family = socket.AF_INET6 if obj.family == 6 else socket.AF_INET
            kwargs: dict[str, Any] = {
                "family": family,
                "dst": obj.dst,
                "oif": index,
                "proto": ROUTE_PROTOCOL,
                "table": RT_TABLE_MAIN,
            }
            if obj.gateway:
                kwargs["gateway"] = obj.gateway
                if replace:
                    kwargs["flags"] = RTNH_F_ONLINK
            return self._ipr.route, kwargs
        if isinstance(obj, Neighbour):
            family = socket.AF_INET6 if ":" in obj.ip else socket.AF_INET
            kwargs = {"family": family, "dst": obj.ip, "ifindex": index}
            if replace:
                kwargs.update(lladdr=obj.mac, state=NUD_PERMANENT)
            return self._ipr.neigh, kwargs
        # FDB: one remote destination per MAC (the diff deletes surplus ones first), so
        # "replace" and never "append". pyroute2 fills in the state and NTF_SELF for "del" only.
        kwargs = {"ifindex": index, "lladdr": obj.mac, "dst": obj.dst}
        if replace:
            kwargs.update(state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)
        return self._ipr.fdb, kwargs

    def _write(self, method: Callable[..., Any], command: str, **kwargs: Any) -> None:
        self._writes += 1
        method(command, **kwargs)
