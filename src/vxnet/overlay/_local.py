"""The local state one allocation asks for (sans-IO): what :mod:`._reconcile` makes true.

From the agent's AgentInfo (its allocation), :func:`desired_local` builds the
:class:`~._local_model.LocalState`:

* the VTEP ``vtep<vni>``: VNI, UDP port, local = the agent's IP, no learning, MTU, MAC and
  addresses from the allocation;
* a bridge ``m-<net>`` with the gateway addresses of the CNI half and the overlay MTU, for every
  network allocated (status OK) with a CNI bridge;
* IPv4 and IPv6 forwarding;
* the CNI network configuration ``<cni_dir>/<net>.conflist`` of each such network (:mod:`._cni`),
  and the IPAM plugin launcher in ``cni_bin_dir`` (:mod:`._launcher`) when one is configured;
* the egress NAT ruleset (:mod:`._nat`) for the overlay's subnets, or none when egress NAT is off.

An allocation saved by an older vxnet may lack the VxLAN port and MTUs: the ``[network]``
defaults stand in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vxnet.overlay._cni import conflists, render
from vxnet.overlay._local_model import LocalState, ManagedFile, Nat, bridge, vtep
from vxnet.overlay._nat import desired_nat

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


def vxlan_of(info: dict[str, Any]) -> dict[str, Any]:
    """The VxLAN backend of the allocation (empty when it has none)."""
    for overlay in info.get("overlays", []):
        vxlan = overlay.get("backend", {}).get("vxlan")
        if vxlan:
            return dict(vxlan)
    return {}


def vtep_name(info: dict[str, Any] | None) -> str:
    """The VTEP's device name, ``vtep<vni>`` (``vtep1024`` before an allocation)."""
    return f"vtep{vxlan_of(info).get('vni', 1024)}" if info else "vtep1024"


def desired_local(info: dict[str, Any], settings: LocalSettings) -> LocalState | None:
    """The local state for allocation ``info``; ``None`` when it has no VxLAN backend."""
    vxlan = vxlan_of(info)
    if not vxlan:
        return None
    name = vtep_name(info)
    devices = {
        name: vtep(
            name,
            int(vxlan.get("vni", 1024)),
            int(vxlan.get("vxlan_port", VXLAN_PORT)),
            settings.agent_ip,
            str(vxlan["vtep_mac"]).lower(),
            int(vxlan.get("vtep_mtu", VTEP_MTU)),
            [str(vxlan["vtep_ip"]), vxlan.get("vtep_ip6")],
        )
    }
    for overlay in info.get("overlays", []):
        mesos = overlay.get("mesos_bridge")
        if overlay.get("state", {}).get("status") != "STATUS_OK" or not mesos:
            continue
        bridge_name = str(mesos["name"])
        mtu = int(mesos.get("mtu", OVERLAY_MTU))
        devices[bridge_name] = bridge(bridge_name, mtu, [mesos.get("ip"), mesos.get("ip6")])
    files: dict[str, ManagedFile] = {}
    if settings.plugin is not None:
        files[settings.plugin.path] = settings.plugin
    for filename, data in conflists(info, settings.ipam_socket, OVERLAY_MTU).items():
        path = str(Path(settings.cni_dir) / filename)
        files[path] = ManagedFile(path, render(data))
    return LocalState(
        devices=devices,
        sysctls=dict(SYSCTLS),
        nat=_nat(info, settings.egress_nat, name),
        files=files,
        scan=(settings.cni_dir,),
    )


def _nat(info: dict[str, Any], egress_nat: bool, vtep_dev: str) -> Nat:
    subnets: list[str] = []
    subnets6: list[str] = []
    for overlay in info.get("overlays", []):
        network = overlay.get("info", {})
        if network.get("subnet"):
            subnets.append(str(network["subnet"]))
        if network.get("subnet6"):
            subnets6.append(str(network["subnet6"]))
    if not egress_nat:
        subnets, subnets6 = [], []
    return desired_nat(subnets, subnets6, vtep_dev)
