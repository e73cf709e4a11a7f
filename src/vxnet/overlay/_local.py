"""The local state one allocation asks for (sans-IO): what :mod:`._reconcile` makes true.

From the agent's AgentInfo (its allocation), :func:`desired_local` builds the
:class:`~._local_model.LocalState`:

* the VTEP ``vtep<vni>``: VNI, UDP port, local = the agent's IP, no learning, MTU, MAC and
  addresses from the allocation;
* a bridge ``m-<net>`` with the gateway addresses of the CNI half and the overlay MTU, for every
  network allocated (status OK) with a CNI bridge;
* the bridge ``vxnet-dns`` (no ports: a device to hold addresses, as ``dummy`` would where the
  kernel has it) with the DNS container addresses (``/32``, ``/128``): every container reaches
  them through its gateway, and the agent's DNS answers there;
* IPv4 and IPv6 forwarding;
* the CNI network configuration ``<cni_dir>/<net>.conflist`` of each such network (:mod:`._cni`,
  naming the DNS container addresses as the containers' nameservers),
  and the IPAM plugin launcher in ``cni_bin_dir`` (:mod:`._launcher`) when one is configured;
* the egress NAT ruleset (:mod:`._nat`) for the overlay's subnets, or none when egress NAT is off.

An allocation saved by an older vxnet may lack the VxLAN port and MTUs: the ``[network]``
defaults stand in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vxnet.overlay._cni import Nameservers, conflists, render
from vxnet.overlay._isolation import Policy, desired_isolation
from vxnet.overlay._local_model import DNS_DEVICE, LocalState, ManagedFile, Nat, bridge, vtep
from vxnet.overlay._nat import desired_nat

if TYPE_CHECKING:
    from vxnet.records import AgentInfo, VxLAN

__all__ = ["OVERLAY_MTU", "SYSCTLS", "LocalSettings", "desired_local", "vtep_name", "vxlan_of"]

# For an allocation saved by an older vxnet, whose AgentInfo lacks them: the [network] defaults.
VXLAN_PORT = 64000
VTEP_MTU = 1500
OVERLAY_MTU = 1420
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1"}


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """What the local state depends on besides the allocation (from the agent's configuration)."""

    agent_ip: str
    cni_dir: str
    ipam_socket: str
    egress_nat: bool
    plugin: ManagedFile | None = None  # the IPAM plugin launcher, when cni_bin_dir is set
    dns_addresses: tuple[str, ...] = ()  # dns.container_addresses (none with DNS off)
    dns_search: tuple[str, ...] = ()  # dns.search


def vxlan_of(info: AgentInfo) -> VxLAN | None:
    """The VxLAN backend of the allocation (that of its networks with status OK), if any."""
    return info.vxlan()


def vtep_name(info: AgentInfo | None) -> str:
    """The VTEP's device name, ``vtep<vni>`` (``vtep1024`` before an allocation)."""
    vxlan = None if info is None else vxlan_of(info)
    return f"vtep{1024 if vxlan is None or vxlan.vni is None else vxlan.vni}"


def desired_local(
    info: AgentInfo, settings: LocalSettings, policy: Policy | None = None
) -> LocalState | None:
    """The local state for allocation ``info`` and isolation ``policy`` (``None``: not known
    yet); ``None`` when it has no VxLAN backend."""
    vxlan = vxlan_of(info)
    if vxlan is None:
        return None
    name = vtep_name(info)
    devices = {
        name: vtep(
            name,
            1024 if vxlan.vni is None else vxlan.vni,
            VXLAN_PORT if vxlan.vxlan_port is None else vxlan.vxlan_port,
            settings.agent_ip,
            vxlan.vtep_mac.lower(),
            VTEP_MTU if vxlan.vtep_mtu is None else vxlan.vtep_mtu,
            [vxlan.vtep_ip, vxlan.vtep_ip6],
        )
    }
    for overlay in info.usable():
        mesos = overlay.mesos_bridge
        if mesos is None:
            continue
        mtu = OVERLAY_MTU if mesos.mtu is None else mesos.mtu
        devices[mesos.name] = bridge(mesos.name, mtu, [mesos.ip, mesos.ip6])
    if settings.dns_addresses:
        hosts = [f"{a}/128" if ":" in a else f"{a}/32" for a in settings.dns_addresses]
        devices[DNS_DEVICE] = bridge(DNS_DEVICE, VTEP_MTU, hosts)
    files: dict[str, ManagedFile] = {}
    if settings.plugin is not None:
        files[settings.plugin.path] = settings.plugin
    dns = Nameservers(settings.dns_addresses, settings.dns_search)
    for filename, data in conflists(info, settings.ipam_socket, OVERLAY_MTU, dns).items():
        path = str(Path(settings.cni_dir) / filename)
        files[path] = ManagedFile(path, render(data))
    return LocalState(
        devices=devices,
        sysctls=dict(SYSCTLS),
        nat=_nat(info, settings.egress_nat, name),
        files=files,
        scan=(settings.cni_dir,),
        isolation=desired_isolation(policy),
    )


def _nat(info: AgentInfo, egress_nat: bool, vtep_dev: str) -> Nat:
    subnets: list[str] = []
    subnets6: list[str] = []
    for overlay in info.overlays:
        network = overlay.info
        if network.subnet:
            subnets.append(network.subnet)
        if network.subnet6:
            subnets6.append(network.subnet6)
    if not egress_nat:
        subnets, subnets6 = [], []
    return desired_nat(subnets, subnets6, vtep_dev)
