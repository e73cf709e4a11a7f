"""The CNI network configuration files the agent writes, one per network.

Rendering (:func:`conflist`, :func:`conflists`, :func:`render`) and recognising vxnet's own files
(:func:`is_managed`) are sans-IO; :func:`write_atomically`, :func:`write_conflist` and
:func:`remove_stale` do the file I/O (the agent goes through :mod:`._machine`).

For every network allocated to the agent with a CNI bridge, ``<cni_dir>/<net>.conflist`` runs
the CNI ``bridge`` plugin on ``m-<net>``: the bridge is the containers' gateway (``isGateway``),
nothing is masqueraded by the plugin (the agent's egress NAT does that, for the whole overlay),
hairpin mode is on, the MTU is the overlay MTU, and ``dns`` names the agent's DNS container
addresses (``dns.container_addresses``) and search domains, which the runtime writes into the
container's ``resolv.conf``. Addresses come from vxnet's IPAM plugin
``vxnet-ipam`` (:mod:`vxnet.ipam_plugin`), which asks the agent over its unix socket for
addresses of the CNI half of the agent's subnet (IPv4 and IPv6 where the network has them).
Files are replaced atomically and only when their content changes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from vxnet.records import AgentInfo, AgentOverlay

__all__ = [
    "CNI_VERSION",
    "Nameservers",
    "conflist",
    "conflists",
    "is_managed",
    "remove_stale",
    "render",
    "write_atomically",
    "write_conflist",
]

CNI_VERSION = "1.0.0"
MANAGED_BY = "vxnet"  # a key of every file vxnet writes, so that it only ever removes its own


@dataclass(frozen=True, slots=True)
class Nameservers:
    """The DNS the containers are given: the agent's container addresses and search domains."""

    addresses: tuple[str, ...] = ()
    search: tuple[str, ...] = ()

    def cni(self) -> dict[str, Any]:
        """The CNI ``dns`` object (empty when there is no address)."""
        if not self.addresses:
            return {}
        out: dict[str, Any] = {"nameservers": list(self.addresses)}
        if self.search:
            out["search"] = list(self.search)
        return out


def conflist(
    overlay: AgentOverlay, ipam_socket: str, mtu: int, dns: Nameservers | None = None
) -> dict[str, Any] | None:
    """The conflist of one AgentInfo overlay entry, or ``None`` when it has no CNI bridge.

    Args:
        overlay: One entry of AgentInfo's ``overlays`` (status OK, with ``mesos_bridge``).
        ipam_socket: The agent's IPAM socket, for ``vxnet-ipam``.
        mtu: The MTU when the entry does not carry one.
        dns: The containers' nameservers, in the bridge plugin's ``dns`` (which it puts into
            its result, replacing the IPAM plugin's: Debian's bridge 1.1.1 does).
    """
    bridge = overlay.mesos_bridge
    if not overlay.ok or bridge is None:
        return None
    if not bridge.ip and not bridge.ip6:
        return None
    name = overlay.name
    return {
        "cniVersion": CNI_VERSION,
        "name": name,
        MANAGED_BY: True,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge.name,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "mtu": mtu if bridge.mtu is None else bridge.mtu,
                "ipam": {"type": "vxnet-ipam", "socket": ipam_socket},
                **({"dns": dns.cni()} if dns is not None and dns.addresses else {}),
            }
        ],
    }


def conflists(
    info: AgentInfo, ipam_socket: str, mtu: int, dns: Nameservers | None = None
) -> dict[str, dict[str, Any]]:
    """Every conflist of an AgentInfo, by file name (``<net>.conflist``)."""
    files: dict[str, dict[str, Any]] = {}
    for overlay in info.overlays:
        data = conflist(overlay, ipam_socket, mtu, dns)
        if data is not None:
            files[f"{data['name']}.conflist"] = data
    return files


def render(data: dict[str, Any]) -> str:
    """The text of a conflist file."""
    return json.dumps(data, indent=2) + "\n"


def is_managed(text: str) -> bool:
    """Whether a conflist's text is one vxnet wrote (and so may remove)."""
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get(MANAGED_BY) is True


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``path`` through a temporary file beside it (fsynced, then renamed), with ``mode``.

    Raises:
        OSError: The directory cannot be created or the file written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as file:
        file.write(text)
        file.flush()
        os.fchmod(file.fileno(), mode)
        os.fsync(file.fileno())
    temporary.replace(path)


def write_conflist(directory: Path, filename: str, data: dict[str, Any]) -> bool:
    """Write ``directory/filename`` atomically unless it holds ``data`` already; True if written.

    Raises:
        OSError: The directory cannot be created or the file written.
    """
    text = render(data)
    path = directory / filename
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_atomically(path, text)
    return True


def remove_stale(directory: Path, keep: set[str]) -> list[str]:
    """Remove the conflists vxnet wrote earlier that are not in ``keep``; return their names."""
    removed: list[str] = []
    try:
        candidates = sorted(directory.glob("*.conflist"))
    except OSError:
        return removed
    for path in candidates:
        if path.name in keep:
            continue
        try:
            text = path.read_text()
        except (OSError, ValueError):
            continue
        if is_managed(text):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
