"""An in-memory :class:`vxnet.overlay._machine.Machine` for unit tests of the reconcile pass.

It keeps devices, remote objects, sysctls, files and the NAT tables as the kernel would after
each op (as far as the pass can tell), records every op applied, and fails the ops a test asks
it to fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from vxnet.overlay._diff import apply_ops
from vxnet.overlay._local_model import (
    AddAddress,
    CreateDevice,
    DeleteAddress,
    DeleteDevice,
    Device,
    LoadIsolation,
    LoadNat,
    ManagedFile,
    Nat,
    NoLearning,
    RemoveFile,
    SetDevice,
    SetSysctl,
    SetUp,
    WriteFile,
    is_owned_device,
)
from vxnet.overlay._machine import MachineError
from vxnet.overlay._model import KernelState
from vxnet.overlay._netlink import ApplyResult

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from vxnet.overlay._local_model import LocalOp
    from vxnet.overlay._model import Op


@dataclass
class FakeMachine:
    devices: dict[str, Device] = field(default_factory=dict)
    remote: KernelState = field(default_factory=KernelState)
    sysctls: dict[str, str] = field(default_factory=dict)
    files: dict[str, ManagedFile] = field(default_factory=dict)
    nat_loaded: str | None = None
    nat_tables: frozenset[str] = frozenset()
    isolation_loaded: str | None = None
    isolation_tables: frozenset[str] = frozenset()
    nft: bool = True
    fail_local: Callable[[LocalOp], bool] = lambda op: False
    fail_remote: Callable[[Op], bool] = lambda op: False
    local_ops: list[LocalOp] = field(default_factory=list)
    remote_ops: list[Op] = field(default_factory=list)
    remote_reads: int = 0
    _indices: dict[str, int] = field(default_factory=dict)

    def read_remote(self, dev: str) -> KernelState:
        self.remote_reads += 1
        return self.remote if dev in self.devices else KernelState()

    def apply_remote(self, ops: Sequence[Op]) -> ApplyResult:
        result = ApplyResult()
        for op in ops:
            self.remote_ops.append(op)
            result.writes += 1
            if self.fail_remote(op) or op.obj.dev not in self.devices:
                result.errors.append(f"{op.action} {op.obj}: refused")
                continue
            self.remote = apply_ops(self.remote, [op])
        return result

    def read_devices(self, names: Iterable[str]) -> dict[str, Device]:
        wanted = set(names)
        return {n: d for n, d in self.devices.items() if n in wanted or is_owned_device(d)}

    def read_sysctls(self, names: Iterable[str]) -> dict[str, str]:
        return {n: self.sysctls[n] for n in names if n in self.sysctls}

    def read_nat(self) -> Nat:
        if not self.nft:
            raise MachineError("egress NAT needs nftables: install the package nftables")
        return Nat(self.nat_loaded, self.nat_tables)

    def read_isolation(self) -> Nat:
        if not self.nft:
            raise MachineError("isolation needs nftables: install the package nftables")
        return Nat(self.isolation_loaded, self.isolation_tables)

    def read_files(self, paths: Iterable[str], scan: Iterable[str]) -> dict[str, ManagedFile]:
        wanted = set(paths)
        dirs = tuple(f"{d.rstrip('/')}/" for d in scan)
        return {
            p: f
            for p, f in self.files.items()
            if p in wanted or (p.startswith(dirs) and p.endswith(".conflist"))
        }

    def apply_local(self, op: LocalOp) -> None:
        self.local_ops.append(op)
        if self.fail_local(op):
            raise MachineError(f"{op}: refused")
        if isinstance(op, CreateDevice):
            d = op.device
            self.devices[d.name] = replace(d, addresses=frozenset(), learning=False, up=False)
            if d.kind == "vxlan":
                self.remote = KernelState()  # a new VTEP holds no objects
        elif isinstance(op, DeleteDevice):
            self.devices.pop(op.name, None)
            self._indices.pop(op.name, None)
        elif isinstance(op, (NoLearning, SetDevice, AddAddress, DeleteAddress, SetUp)):
            d = self.devices[op.name]
            if isinstance(op, NoLearning):
                d = replace(d, learning=False)
            elif isinstance(op, SetDevice):
                d = replace(d, mtu=op.mtu or d.mtu, mac=op.mac or d.mac)
            elif isinstance(op, AddAddress):
                d = replace(d, addresses=d.addresses | {op.address})
            elif isinstance(op, DeleteAddress):
                d = replace(d, addresses=d.addresses - {op.address})
            else:
                d = replace(d, up=True)
            self.devices[op.name] = d
        elif isinstance(op, SetSysctl):
            self.sysctls[op.name] = op.value
        elif isinstance(op, WriteFile):
            self.files[op.file.path] = replace(op.file, mark=None)
        elif isinstance(op, RemoveFile):
            self.files.pop(op.path, None)
        elif isinstance(op, LoadIsolation):
            self.isolation_loaded = op.isolation.ruleset
            self.isolation_tables = op.isolation.families
        else:
            assert isinstance(op, LoadNat)
            if not self.nft:
                raise MachineError("egress NAT needs nftables: install the package nftables")
            self.nat_loaded = op.nat.ruleset
            self.nat_tables = op.nat.families

    def index(self, name: str) -> int | None:
        if name not in self.devices:
            return None
        return self._indices.setdefault(name, 10 + len(self._indices))
