"""The host an agent programs, behind a :class:`typing.Protocol` (I/O in :class:`LinuxMachine`).

:class:`Machine` is every operation the reconcile pass (:mod:`._reconcile`) needs: read the
actual state and apply ops, for the objects towards remote agents (:mod:`._model`) and for the
local state (:mod:`._local_model`: devices, sysctls, the NAT ruleset, files). The pass decides
what to change; a machine only translates, so the pass's rules are tested with an in-memory
machine, without root.

:class:`LinuxMachine` is the real one: netlink through :class:`~._netlink.Kernel` (one pyroute2
socket), sysctls under ``/proc/sys``, ``nft`` for the NAT tables, files written atomically.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vxnet.overlay._cni import write_atomically
from vxnet.overlay._isolation import TABLE as ISOLATION_TABLE
from vxnet.overlay._local_model import (
    DEVICE_OPS,
    LoadIsolation,
    LoadNat,
    ManagedFile,
    Nat,
    RemoveFile,
    SetSysctl,
    WriteFile,
)
from vxnet.overlay._nat import TABLE

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from vxnet.overlay._local_model import Device, LocalOp
    from vxnet.overlay._model import KernelState, Op
    from vxnet.overlay._netlink import ApplyResult, Kernel

__all__ = ["LinuxMachine", "Machine", "MachineError"]

SYSCTL_ROOT = Path("/proc/sys")
NFT_TIMEOUT = 10.0
CONFLIST_SUFFIX = ".conflist"


class MachineError(Exception):
    """A read or an op failed (the kernel refused it, ``nft`` is missing, a file is unwritable);
    the message says which and why."""


class Machine(Protocol):
    """What the reconcile pass reads and changes on the agent's host."""

    def read_remote(self, dev: str) -> KernelState:
        """The objects vxnet owns on VTEP ``dev`` (empty without the device).

        Raises:
            MachineError: The read failed.
        """
        ...

    def apply_remote(self, ops: Sequence[Op]) -> ApplyResult:
        """Carry out ``ops`` in order; a refused op is recorded in the result, not raised."""
        ...

    def read_devices(self, names: Iterable[str]) -> dict[str, Device]:
        """The devices ``names`` that exist and every device vxnet owns, by name.

        Raises:
            MachineError: The read failed.
        """
        ...

    def read_sysctls(self, names: Iterable[str]) -> dict[str, str]:
        """The values of the sysctls ``names`` (``net/ipv4/ip_forward``) that exist.

        Raises:
            MachineError: The read failed.
        """
        ...

    def read_nat(self) -> Nat:
        """The ruleset this machine loaded last (``None``: none yet) and the tables present.

        Raises:
            MachineError: ``nft`` is missing or failed.
        """
        ...

    def read_isolation(self) -> Nat:
        """The isolation ruleset this machine loaded last (``None``: none yet) and ``inet`` if
        the isolation table is present.

        Raises:
            MachineError: ``nft`` is missing or failed.
        """
        ...

    def read_files(self, paths: Iterable[str], scan: Iterable[str]) -> dict[str, ManagedFile]:
        """The files ``paths`` that exist and every ``*.conflist`` in the directories ``scan``.

        A file that cannot be read or decoded is shown with empty text.
        """
        ...

    def apply_local(self, op: LocalOp) -> None:
        """Carry out one local op.

        Raises:
            MachineError: It failed.
        """
        ...

    def index(self, name: str) -> int | None:
        """The interface index of device ``name`` (``None``: no such device).

        Raises:
            MachineError: The read failed.
        """
        ...


class LinuxMachine:
    """The :class:`Machine` of this host: netlink over the pyroute2 socket ``ipr`` (not owned:
    the caller closes it), ``/proc/sys``, ``nft``, and the file system."""

    def __init__(self, ipr: Any) -> None:
        from vxnet.overlay._netlink import Kernel

        self.kernel: Kernel = Kernel(ipr)
        self._nat: str | None = None
        self._isolation: str | None = None

    def read_remote(self, dev: str) -> KernelState:
        with _translated("reading the owned objects"):
            return self.kernel.read(dev)

    def apply_remote(self, ops: Sequence[Op]) -> ApplyResult:
        return self.kernel.apply(ops)

    def read_devices(self, names: Iterable[str]) -> dict[str, Device]:
        with _translated("reading the devices"):
            found = self.kernel.owned_devices()
            for name in names:
                if name not in found:
                    device = self.kernel.device(name)
                    if device is not None:
                        found[name] = device
            return found

    def read_sysctls(self, names: Iterable[str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for name in names:
            try:
                values[name] = (SYSCTL_ROOT / name).read_text().strip()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise MachineError(f"sysctl {name}: {exc}") from exc
        return values

    def read_nat(self) -> Nat:
        return Nat(self._nat, _families_of(TABLE))

    def read_isolation(self) -> Nat:
        return Nat(self._isolation, _families_of(ISOLATION_TABLE))

    def read_files(self, paths: Iterable[str], scan: Iterable[str]) -> dict[str, ManagedFile]:
        candidates = {Path(p) for p in paths}
        for directory in scan:
            try:
                candidates.update(Path(directory).glob(f"*{CONFLIST_SUFFIX}"))
            except OSError:
                continue
        files: dict[str, ManagedFile] = {}
        for path in candidates:
            try:
                mode = path.stat().st_mode & 0o7777
                text = path.read_text()
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError):
                mode, text = 0, ""
            files[str(path)] = ManagedFile(str(path), text, mode)
        return files

    def apply_local(self, op: LocalOp) -> None:
        if isinstance(op, DEVICE_OPS):
            with _translated(str(op)):
                self.kernel.apply_device(op)
        elif isinstance(op, SetSysctl):
            try:
                (SYSCTL_ROOT / op.name).write_text(op.value)
            except OSError as exc:
                raise MachineError(f"sysctl {op.name}={op.value}: {exc}") from exc
        elif isinstance(op, WriteFile):
            try:
                write_atomically(Path(op.file.path), op.file.text, op.file.mode)
            except OSError as exc:
                raise MachineError(f"cannot write {op.file.path}: {exc}") from exc
        elif isinstance(op, RemoveFile):
            try:
                Path(op.path).unlink(missing_ok=True)
            except OSError as exc:
                raise MachineError(f"cannot remove {op.path}: {exc}") from exc
        elif isinstance(op, LoadNat):
            self._nat = None
            if op.nat.ruleset is not None:
                _nft(["-f", "-"], op.nat.ruleset)
            self._nat = op.nat.ruleset
        elif isinstance(op, LoadIsolation):
            self._isolation = None
            if op.isolation.ruleset is not None:
                _nft(["-f", "-"], op.isolation.ruleset)
            self._isolation = op.isolation.ruleset
        else:
            raise MachineError(f"unknown op {op}")

    def index(self, name: str) -> int | None:
        with _translated(f"reading device {name}"):
            return self.kernel.index(name)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn the errors of netlink and of pyroute2's arguments into :class:`MachineError`."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as exc:
        raise MachineError(f"{what}: {exc.args[-1]} (errno {exc.code})") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise MachineError(f"{what}: {exc}") from exc


def _families_of(table: str) -> frozenset[str]:
    """The families (``ip``, ``ip6``, ``inet``) in which nftables holds a table named ``table``.

    Raises:
        MachineError: ``nft`` is missing or failed.
    """
    found = set()
    for line in _nft(["list", "tables"]).splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table" and words[2] == table:
            found.add(words[1])
    return frozenset(found)


def _nft(args: Sequence[str], stdin: str | None = None) -> str:
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft is None:
        raise MachineError("egress NAT needs nftables: install the package nftables")
    try:
        done = subprocess.run(
            [nft, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MachineError(f"nft {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise MachineError(f"nft {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout
