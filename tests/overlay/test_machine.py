"""The reconcile pass over the real machine, in a lab network namespace: devices and remote
objects through netlink (sysctls, NAT and files are the agent's own namespace's, so not here)."""

from __future__ import annotations

import pytest

from vxnet.overlay._local_model import LocalState, bridge, vtep
from vxnet.overlay._machine import LinuxMachine
from vxnet.overlay._model import RemoteAgent, desired_state
from vxnet.overlay._reconcile import Reconciler
from vxnet.sandbox.lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab_ready")]

DEV = "vtep1024"


def remote(n: int) -> RemoteAgent:
    return RemoteAgent(
        f"198.19.0.{n}", f"44.128.0.{n}", f"70:b3:d5:80:00:{n:02x}", None, (f"9.0.{n}.0/24",)
    )


def test_devices_and_remote_objects_converge_and_then_nothing_is_written() -> None:
    with Lab(1) as lab, lab.hosts[0].iproute() as ipr:
        host = lab.hosts[0]
        local = str(host.address)
        desired = LocalState(
            devices={
                DEV: vtep(DEV, 1024, 64000, local, "70:b3:d5:80:00:01", 1420, ["44.128.0.1/20"]),
                "m-dcos": bridge("m-dcos", 1420, ["9.0.1.1/25"]),
            }
        )
        # left from an older allocation, and a device that is not vxnet's
        host.run(
            ["ip", "link", "add", "vtep1025", "type", "vxlan", "id", "1025", "dstport", "64000"]
        )
        host.run(["ip", "link", "add", "m-old", "type", "bridge"])
        host.run(["ip", "link", "add", "m-theirs", "type", "veth", "peer", "name", "m-theirs2"])
        machine, reconciler = LinuxMachine(ipr), Reconciler()
        remotes = [remote(2), remote(3)]
        assert reconciler.run(
            machine, desired, remotes, DEV, read=True, check_local=True, synced=True
        )
        assert reconciler.netlink_errors == 0, reconciler.last_errors
        links = host.run(["ip", "-o", "link", "show"]).stdout
        assert "vtep1025" not in links
        assert "m-old" not in links
        assert "m-theirs" in links
        assert "vxlan id 1024" in host.run(["ip", "-d", "link", "show", DEV]).stdout
        assert "9.0.1.1/25" in host.run(["ip", "-o", "addr", "show", "dev", "m-dcos"]).stdout
        assert machine.read_remote(DEV) == desired_state(remotes, DEV)
        assert reconciler.link_indices.keys() == {DEV, "m-dcos"}

        writes = machine.kernel.writes
        reconciler.run(machine, desired, remotes, DEV, read=True, check_local=True, synced=True)
        assert machine.kernel.writes == writes

        # someone sets a wrong VNI by recreating the device: replaced, then refilled
        host.run(["ip", "link", "del", DEV])
        host.run(["ip", "link", "add", DEV, "type", "vxlan", "id", "7", "dstport", "64000"])
        reconciler.run(machine, desired, remotes, DEV, read=True, check_local=True, synced=True)
        assert "vxlan id 1024" in host.run(["ip", "-d", "link", "show", DEV]).stdout
        assert machine.read_remote(DEV) == desired_state(remotes, DEV)
        assert reconciler.netlink_errors == 0, reconciler.last_errors
