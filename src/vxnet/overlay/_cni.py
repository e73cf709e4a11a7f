"""The CNI network configuration files the agent writes, one per network (sans-IO rendering).

For every network allocated to the agent with a CNI bridge, ``<cni_dir>/<net>.conflist`` runs
the CNI ``bridge`` plugin on ``m-<net>``: the bridge is the containers' gateway (``isGateway``),
nothing is masqueraded by the plugin (the agent's egress NAT does that, for the whole overlay),
hairpin mode is on and the MTU is the overlay MTU. Addresses come from vxnet's IPAM plugin
``vxnet-ipam`` (:mod:`vxnet.ipam_plugin`), which asks the agent over its unix socket for
addresses of the CNI half of the agent's subnet (IPv4 and IPv6 where the network has them).
Files are replaced atomically and only when their content changes.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from vxnet.records import AgentInfo, AgentOverlay

__all__ = ["CNI_VERSION", "conflist", "conflists", "remove_stale", "write_conflist"]

CNI_VERSION = "1.0.0"
MANAGED_BY = "vxnet"  # a key of every file vxnet writes, so that it only ever removes its own


def conflist(overlay: AgentOverlay, ipam_socket: str, mtu: int) -> dict[str, Any] | None:
    """The conflist of one AgentInfo overlay entry, or ``None`` when it has no CNI bridge.

    Args:
        overlay: One entry of AgentInfo's ``overlays`` (status OK, with ``mesos_bridge``).
        ipam_socket: The agent's IPAM socket, for ``vxnet-ipam``.
        mtu: The MTU when the entry does not carry one.
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
            }
        ],
    }


def conflists(info: AgentInfo, ipam_socket: str, mtu: int) -> dict[str, dict[str, Any]]:
    """Every conflist of an AgentInfo, by file name (``<net>.conflist``)."""
    files: dict[str, dict[str, Any]] = {}
    for overlay in info.overlays:
        data = conflist(overlay, ipam_socket, mtu)
        if data is not None:
            files[f"{data['name']}.conflist"] = data
    return files


def write_conflist(directory: Path, filename: str, data: dict[str, Any]) -> bool:
    """Write ``directory/filename`` atomically unless it holds ``data`` already; True if written.

    Raises:
        OSError: The directory cannot be created or the file written.
    """
    text = json.dumps(data, indent=2) + "\n"
    path = directory / filename
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{filename}.tmp")
    with temporary.open("w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
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
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get(MANAGED_BY) is True:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
