"""The reconcile pass over an in-memory machine: its rules, without root."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from fakemachine import FakeMachine

from vxnet.overlay._local import LocalSettings, desired_local
from vxnet.overlay._local_model import (
    AddAddress,
    CreateDevice,
    DeleteAddress,
    DeleteDevice,
    Device,
    ManagedFile,
    WriteFile,
)
from vxnet.overlay._model import Fdb, Neighbour, RemoteAgent, Route, desired_state
from vxnet.overlay._reconcile import Reconciler
from vxnet.records import AgentInfo

DEV = "vtep1024"
SETTINGS = LocalSettings("198.18.0.1", "/cni", "/run/ipam.sock", egress_nat=True)
INFO: dict[str, Any] = {
    "ip": "198.18.0.1",
    "overlays": [
        {
            "info": {"name": "dcos", "subnet": "9.0.0.0/8"},
            "subnet": "9.0.1.0/24",
            "backend": {
                "vxlan": {
                    "vni": 1024,
                    "vtep_ip": "44.128.0.1/20",
                    "vtep_mac": "70:b3:d5:80:00:01",
                    "vxlan_port": 64000,
                    "vtep_mtu": 1500,
                }
            },
            "mesos_bridge": {"name": "m-dcos", "mtu": 1420, "ip": "9.0.1.1/25"},
            "state": {"status": "STATUS_OK"},
        }
    ],
}


def remote(n: int) -> RemoteAgent:
    return RemoteAgent(
        f"198.18.0.{n}", f"44.128.0.{n}", f"70:b3:d5:80:00:{n:02x}", None, (f"9.0.{n}.0/24",)
    )


def run(
    reconciler: Reconciler,
    machine: FakeMachine,
    info: dict[str, Any],
    remotes: list[RemoteAgent],
    *,
    read: bool = True,
    local: bool = True,
    synced: bool = True,
) -> bool:
    return reconciler.run(
        machine,
        desired_local(AgentInfo.from_json(info), SETTINGS),
        remotes,
        DEV,
        read=read,
        check_local=local,
        synced=synced,
    )


def test_a_first_pass_programs_everything_and_an_unchanged_state_applies_nothing() -> None:
    machine, reconciler = FakeMachine(), Reconciler()
    assert run(reconciler, machine, INFO, [remote(2), remote(3)]) is True
    assert machine.devices["vtep1024"].vni == 1024
    assert machine.devices["m-dcos"].addresses == {"9.0.1.1/25"}
    assert all(d.up for d in machine.devices.values())
    assert machine.sysctls == {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1"}
    assert list(machine.files) == ["/cni/dcos.conflist"]
    assert machine.nat_tables == {"ip"}
    assert machine.remote == desired_state([remote(2), remote(3)], DEV)
    assert reconciler.link_indices.keys() == {"vtep1024", "m-dcos"}
    assert reconciler.nat_programmed
    local_ops, remote_ops = len(machine.local_ops), len(machine.remote_ops)
    for read, local in ((True, True), (False, False), (True, False)):
        run(reconciler, machine, INFO, [remote(2), remote(3)], read=read, local=local)
    assert (len(machine.local_ops), len(machine.remote_ops)) == (local_ops, remote_ops)
    assert reconciler.netlink_errors == reconciler.local_errors == 0


def test_no_remote_entry_is_deleted_before_the_store_has_synced() -> None:
    machine, reconciler = FakeMachine(), Reconciler()
    run(reconciler, machine, INFO, [remote(2), remote(3)])
    # restarted: the store holds only remote 2 so far, and remote 4 is new
    run(reconciler, machine, INFO, [remote(2), remote(4)], synced=False)
    assert machine.remote == desired_state([remote(2), remote(3), remote(4)], DEV)
    assert not [op for op in machine.remote_ops if op.action == "delete"]
    run(reconciler, machine, INFO, [remote(2), remote(4)], synced=True)
    assert machine.remote == desired_state([remote(2), remote(4)], DEV)
    deleted = {op.obj for op in machine.remote_ops if op.action == "delete"}
    assert deleted == {
        Route("9.0.3.0/24", "44.128.0.3", DEV),
        Neighbour("44.128.0.3", "70:b3:d5:80:00:03", DEV),
        Fdb("70:b3:d5:80:00:03", "198.18.0.3", DEV),
    }


def test_a_vtep_with_a_wrong_vni_is_replaced() -> None:
    machine, reconciler = FakeMachine(), Reconciler()
    run(reconciler, machine, INFO, [remote(2)])
    machine.devices[DEV] = replace(machine.devices[DEV], vni=7)  # made by hand
    machine.local_ops.clear()
    run(reconciler, machine, INFO, [remote(2)])
    assert machine.local_ops[:2] == [DeleteDevice(DEV), CreateDevice(desired_vtep())]
    assert machine.devices[DEV].vni == 1024
    assert machine.remote == desired_state([remote(2)], DEV)  # refilled after the replace


def test_a_changed_subnet_replaces_the_bridge_address() -> None:
    machine, reconciler = FakeMachine(), Reconciler()
    run(reconciler, machine, INFO, [])
    changed = copy.deepcopy(INFO)
    changed["overlays"][0]["mesos_bridge"]["ip"] = "9.0.5.1/25"
    machine.local_ops.clear()
    assert run(reconciler, machine, changed, [], local=False) is True  # a new allocation
    assert machine.local_ops == [
        AddAddress("m-dcos", "9.0.5.1/25"),
        DeleteAddress("m-dcos", "9.0.1.1/25"),
    ]
    assert machine.devices["m-dcos"].addresses == {"9.0.5.1/25"}


def test_a_failed_device_op_stops_the_pass_and_is_retried_next_pass() -> None:
    failures = [1]

    def fail_once(op: object) -> bool:
        if isinstance(op, AddAddress) and op.name == DEV and failures:
            failures.pop()
            return True
        return False

    machine, reconciler = FakeMachine(fail_local=fail_once), Reconciler()
    assert run(reconciler, machine, INFO, [remote(2)]) is False
    assert reconciler.netlink_errors == 1
    assert machine.remote_ops == []  # no remote object before the VTEP is right
    assert "m-dcos" not in machine.devices
    # the next pass, even a quick one, programs the local state again
    assert run(reconciler, machine, INFO, [remote(2)], read=False, local=False) is True
    assert machine.devices[DEV].addresses == {"44.128.0.1/20"}
    assert machine.remote == desired_state([remote(2)], DEV)


def test_a_failed_remote_op_is_retried_next_pass_against_a_fresh_read() -> None:
    failures = [1]

    def fail_once(op: object) -> bool:
        if failures:
            failures.pop()
            return True
        return False

    machine, reconciler = FakeMachine(fail_remote=fail_once), Reconciler()
    run(reconciler, machine, INFO, [remote(2)])
    assert reconciler.netlink_errors == 1
    assert len(reconciler.last_errors) == 1
    assert machine.remote != desired_state([remote(2)], DEV)
    reads = machine.remote_reads
    run(reconciler, machine, INFO, [remote(2)], read=False, local=False)
    assert machine.remote_reads == reads + 1  # what it knew was dropped: read again
    assert machine.remote == desired_state([remote(2)], DEV)


def test_nat_and_file_failures_are_counted_and_the_pass_goes_on() -> None:
    machine, reconciler = FakeMachine(nft=False), Reconciler()
    machine.files["/bin/vxnet-ipam"] = ManagedFile("/bin/vxnet-ipam", "#!/bin/sh\n", 0o755)
    plugin = ManagedFile("/bin/vxnet-ipam", "#!py\n# ours\n", 0o755, "# ours")
    settings = LocalSettings("198.18.0.1", "/cni", "/s", egress_nat=True, plugin=plugin)

    machine.fail_local = lambda op: isinstance(op, WriteFile)
    assert reconciler.run(
        machine,
        desired_local(AgentInfo.from_json(INFO), settings),
        [remote(2)],
        DEV,
        read=True,
        check_local=True,
        synced=True,
    )
    assert reconciler.local_errors == 2  # nft missing; the conflist not written
    assert not reconciler.nat_programmed
    assert machine.files["/bin/vxnet-ipam"].text == "#!/bin/sh\n"  # someone else's: left alone
    assert machine.remote == desired_state([remote(2)], DEV)
    assert reconciler.netlink_errors == 0


def desired_vtep() -> Device:
    desired = desired_local(AgentInfo.from_json(INFO), SETTINGS)
    assert desired is not None
    return desired.devices[DEV]
