"""The local state's diff (sans-IO): replace semantics for devices, and what it leaves alone."""

from __future__ import annotations

from dataclasses import replace

from fakemachine import FakeMachine
from hypothesis import given
from hypothesis import strategies as st

from vxnet.overlay._local import LocalSettings, desired_local
from vxnet.overlay._local_model import (
    AddAddress,
    CreateDevice,
    DeleteAddress,
    DeleteDevice,
    Device,
    LoadNat,
    LocalState,
    ManagedFile,
    Nat,
    NoLearning,
    RemoveFile,
    SetDevice,
    SetSysctl,
    SetUp,
    WriteFile,
    bridge,
    diff_local,
    foreign_files,
    is_owned_device,
    vtep,
)
from vxnet.overlay._nat import nat_ruleset
from vxnet.records import AgentInfo

VTEP = vtep("vtep1024", 1024, 64000, "198.18.0.1", "70:B3:D5:80:00:01", 1500, ["44.128.0.1/20"])
BRIDGE = bridge("m-dcos", 1420, ["9.0.1.1/25", "fd01:b::1:0:0:1/81", None])


def held(device: Device, **changes: object) -> Device:
    """``device`` as the kernel shows it (a MAC of its own for a bridge)."""
    kernel = replace(device, mac=device.mac or "02:00:00:00:00:01")
    return replace(kernel, **changes)  # type: ignore[arg-type]


def state(*devices: Device, **kwargs: object) -> LocalState:
    return LocalState(devices={d.name: d for d in devices}, **kwargs)  # type: ignore[arg-type]


def test_desired_devices_are_spelt_as_the_kernel_shows_them() -> None:
    assert VTEP.mac == "70:b3:d5:80:00:01"
    assert BRIDGE.addresses == frozenset({"9.0.1.1/25", "fd01:b::1:0:0:1/81"})
    assert bridge("b", 1, ["fd01:000b::0001:0:0:1/81"]).addresses == {"fd01:b::1:0:0:1/81"}


def test_an_unchanged_state_gives_no_op() -> None:
    actual = state(held(VTEP), held(BRIDGE), held(bridge("d-dcos", 1500, [])))
    assert diff_local(state(VTEP, BRIDGE), actual) == []


def test_absent_devices_are_created_vtep_first_then_addressed_then_up() -> None:
    assert diff_local(state(BRIDGE, VTEP), LocalState()) == [
        CreateDevice(VTEP),
        AddAddress("vtep1024", "44.128.0.1/20"),
        SetUp("vtep1024"),
        CreateDevice(BRIDGE),
        AddAddress("m-dcos", "9.0.1.1/25"),
        AddAddress("m-dcos", "fd01:b::1:0:0:1/81"),
        SetUp("m-dcos"),
    ]


def test_a_vtep_with_another_vni_port_or_local_address_is_replaced() -> None:
    for wrong in ({"vni": 7}, {"port": 4789}, {"local": "198.18.0.9"}, {"local": None}):
        ops = diff_local(state(VTEP), state(held(VTEP, **wrong)))
        assert ops == [
            DeleteDevice("vtep1024"),
            CreateDevice(VTEP),
            AddAddress("vtep1024", "44.128.0.1/20"),
            SetUp("vtep1024"),
        ], wrong


def test_a_device_of_another_kind_is_replaced() -> None:
    veth = Device("m-dcos", "veth", 1500, frozenset({"9.0.1.1/25"}), mac="02:00:00:00:00:09")
    ops = diff_local(state(BRIDGE), state(veth))
    assert ops[:2] == [DeleteDevice("m-dcos"), CreateDevice(BRIDGE)]


def test_mtu_mac_learning_and_state_are_changed_in_place() -> None:
    actual = held(VTEP, mtu=1400, mac="70:b3:d5:80:00:99", learning=True, up=False)
    assert diff_local(state(VTEP), state(actual)) == [
        NoLearning("vtep1024"),
        SetDevice("vtep1024", 1500, "70:b3:d5:80:00:01"),
        SetUp("vtep1024"),
    ]
    # a bridge's MAC is the kernel's: only the MTU is set
    assert diff_local(state(BRIDGE), state(held(BRIDGE, mtu=1500))) == [
        SetDevice("m-dcos", 1420, None)
    ]


def test_a_changed_subnet_replaces_the_address_adds_first() -> None:
    actual = held(BRIDGE, addresses=frozenset({"9.0.7.1/25", "fd01:b::1:0:0:1/81"}))
    assert diff_local(state(BRIDGE), state(actual)) == [
        AddAddress("m-dcos", "9.0.1.1/25"),
        DeleteAddress("m-dcos", "9.0.7.1/25"),
    ]
    # the same IP with another prefix length: the old one goes first (IPv6 refuses both)
    actual = held(BRIDGE, addresses=frozenset({"9.0.1.1/25", "fd01:b::1:0:0:1/64"}))
    assert diff_local(state(BRIDGE), state(actual)) == [
        DeleteAddress("m-dcos", "fd01:b::1:0:0:1/64"),
        AddAddress("m-dcos", "fd01:b::1:0:0:1/81"),
    ]


def test_stale_owned_devices_go_first_and_foreign_ones_stay() -> None:
    old_vtep = held(replace(VTEP, name="vtep1025", vni=1025))
    old_bridge = held(bridge("m-gone", 1420, ["9.0.9.1/25"]))
    theirs = [
        held(bridge("d-dcos", 1500, [])),  # Docker's
        Device("m-veth", "veth", 1500, mac="02:00:00:00:00:05"),  # not a bridge
        Device("vtepx", "dummy", 1500, mac="02:00:00:00:00:06"),  # not a VxLAN device
    ]
    ops = diff_local(state(VTEP), state(old_bridge, old_vtep, *theirs))
    assert ops[:3] == [DeleteDevice("m-gone"), DeleteDevice("vtep1025"), CreateDevice(VTEP)]
    assert not [op for op in ops[3:] if isinstance(op, DeleteDevice)]


def test_sysctls_nat_and_files() -> None:
    nat = Nat("table ip vxnet\n", frozenset({"ip"}))
    ours = ManagedFile("/cni/dcos.conflist", '{"vxnet": true}\n')
    plugin = ManagedFile("/bin/vxnet-ipam", "#!py\n# mark\n", 0o755, "# mark")
    desired = LocalState(
        sysctls={"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1"},
        nat=nat,
        files={ours.path: ours, plugin.path: plugin},
        scan=("/cni",),
    )
    assert diff_local(desired, LocalState()) == [
        SetSysctl("net/ipv4/ip_forward", "1"),
        SetSysctl("net/ipv6/conf/all/forwarding", "1"),
        WriteFile(plugin),
        WriteFile(ours),
        LoadNat(nat),
    ]
    stale = ManagedFile("/cni/old.conflist", '{"name": "old", "vxnet": true}')
    theirs = ManagedFile("/cni/theirs.conflist", '{"name": "theirs"}')
    actual = LocalState(
        sysctls={"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "0"},
        nat=Nat(nat.ruleset, frozenset()),  # loaded, then someone deleted the table
        files={
            ours.path: ours,
            plugin.path: ManagedFile(plugin.path, "#!/bin/sh\n", 0o755),  # someone else's
            stale.path: stale,
            theirs.path: theirs,
        },
    )
    assert diff_local(desired, actual) == [
        SetSysctl("net/ipv6/conf/all/forwarding", "1"),
        RemoveFile("/cni/old.conflist"),
        LoadNat(nat),
    ]
    assert foreign_files(desired, actual) == ["/bin/vxnet-ipam"]
    # our own launcher with another mode is written again
    actual.files[plugin.path] = ManagedFile(plugin.path, plugin.text, 0o644)
    assert WriteFile(plugin) in diff_local(desired, actual)


INFO = {
    "ip": "198.18.0.1",
    "overlays": [
        {
            "info": {"name": "dcos", "subnet": "9.0.0.0/8", "subnet6": "fd01:b::/64"},
            "subnet": "9.0.1.0/24",
            "backend": {
                "vxlan": {
                    "vni": 1024,
                    "vtep_ip": "44.128.0.1/20",
                    "vtep_mac": "70:B3:D5:80:00:01",
                    "vxlan_port": 64000,
                    "vtep_mtu": 1500,
                }
            },
            "mesos_bridge": {"name": "m-dcos", "mtu": 1420, "ip": "9.0.1.1/25"},
            "state": {"status": "STATUS_OK"},
        },
        {
            "info": {"name": "bad", "subnet": "10.0.0.0/8"},
            "mesos_bridge": {"name": "m-bad", "ip": "10.0.1.1/25"},
            "state": {"status": "STATUS_FAILED"},
        },
    ],
}


def test_desired_local_from_an_allocation() -> None:
    settings = LocalSettings("198.18.0.1", "/etc/cni/net.d", "/run/ipam.sock", egress_nat=True)
    desired = desired_local(AgentInfo.from_json(INFO), settings)
    assert desired is not None
    assert desired.devices == {
        "vtep1024": VTEP,
        "m-dcos": bridge("m-dcos", 1420, ["9.0.1.1/25"]),
    }
    assert list(desired.files) == ["/etc/cni/net.d/dcos.conflist"]
    assert desired.scan == ("/etc/cni/net.d",)
    assert desired.nat is not None
    assert desired.nat.families == {"ip", "ip6"}
    assert "9.0.0.0/8, 10.0.0.0/8" in (desired.nat.ruleset or "")
    off = desired_local(AgentInfo.from_json(INFO), replace(settings, egress_nat=False))
    assert off is not None
    assert off.nat == Nat(nat_ruleset([], [], "vtep1024"), frozenset())
    assert desired_local(AgentInfo("198.18.0.1"), settings) is None


ADDRESSES = st.frozensets(
    st.sampled_from(["9.0.1.1/25", "9.0.1.1/24", "9.0.2.1/25", "fd01:b::1/64", "fd01:b::1/80"]),
    max_size=3,
)


@st.composite
def devices(draw: st.DrawFn, actual: bool) -> Device:
    name = draw(st.sampled_from(["vtep1024", "vtep1025", "m-a", "m-b", "eth0"]))
    kind = draw(st.sampled_from(["vxlan", "bridge", "veth"] if actual else ["vxlan", "bridge"]))
    vxlan = kind == "vxlan"
    return Device(
        name,
        kind,
        draw(st.sampled_from([1420, 1500])),
        draw(ADDRESSES),
        mac=draw(st.sampled_from(["70:b3:d5:80:00:01", "02:00:00:00:00:09"]))
        if vxlan or actual
        else None,
        vni=draw(st.sampled_from([1024, 7])) if vxlan else None,
        port=64000 if vxlan else None,
        local="198.18.0.1" if vxlan else None,
        learning=draw(st.booleans()) if actual and vxlan else False,
        up=draw(st.booleans()) if actual else True,
    )


@given(st.lists(devices(actual=False), max_size=3), st.lists(devices(actual=True), max_size=4))
def test_applying_the_diff_reaches_the_desired_devices_and_then_diffs_empty(
    want: list[Device], have: list[Device]
) -> None:
    desired = state(*want)
    held = {d.name: d for d in have}  # one device per name, as in a kernel
    machine = FakeMachine(devices=dict(held))
    for op in diff_local(desired, LocalState(devices=machine.read_devices(desired.devices))):
        machine.apply_local(op)
    after = LocalState(devices=machine.read_devices(desired.devices))
    assert diff_local(desired, after) == []
    for name, device in desired.devices.items():
        got = after.devices[name]
        assert (got.kind, got.mtu, got.addresses, got.up) == (
            device.kind,
            device.mtu,
            device.addresses,
            True,
        )
        assert device.mac is None or got.mac == device.mac
    # the others: the owned ones are gone, the foreign ones untouched
    others = {n: d for n, d in held.items() if n not in desired.devices}
    assert {n: d for n, d in machine.devices.items() if n not in desired.devices} == {
        n: d for n, d in others.items() if not is_owned_device(d)
    }
