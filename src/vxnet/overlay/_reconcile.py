"""One reconcile pass over a :class:`~._machine.Machine`: the local state, then the objects
towards remote agents (no I/O of its own: everything goes through the machine).

:meth:`Reconciler.run` takes the desired local state (:mod:`._local`), the live remote agents
and the machine, and:

1. when asked to (``local``: a full pass, or a device event) or when the desired local state
   changed since it was last programmed, reads the actual local state and applies
   :func:`~._local_model.diff_local`. A failed device or sysctl op stops the pass (the remote
   objects need the VTEP) and the next pass tries again; a failed file or NAT op is counted in
   ``local_errors`` and warned about once, and the pass goes on;
2. diffs the remote objects (:mod:`._diff`) against a fresh read of the machine (``read``) or
   against what the last pass left (cheap: nothing is read), and applies the difference.
   Until the store has synced with a peer (``synced``) a missing record may only be one not
   received yet, so nothing is deleted: a restarted agent keeps every entry, and traffic
   through it never stops. A failed op is counted in ``netlink_errors`` and the next pass
   reads the machine again, so it is retried.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vxnet.overlay._diff import apply_ops, diff
from vxnet.overlay._local_model import (
    DEVICE_OPS,
    LoadIsolation,
    LoadNat,
    LocalState,
    RemoveFile,
    SetSysctl,
    WriteFile,
    diff_local,
    foreign_files,
)
from vxnet.overlay._machine import MachineError
from vxnet.overlay._model import desired_state

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vxnet.overlay._machine import Machine
    from vxnet.overlay._model import KernelState, RemoteAgent

__all__ = ["Reconciler"]

log = logging.getLogger("vxnet.overlay")


class Reconciler:
    """The reconcile passes of one agent, and what they counted."""

    def __init__(self) -> None:
        self.netlink_errors = 0
        self.local_errors = 0
        self.reconciles = 0
        self.last_errors: list[str] = []
        self.nat_programmed = False
        self.isolation_programmed = False
        self.link_indices: dict[str, int] = {}  # the local devices, by name (for notifications)
        self._known: KernelState | None = None
        self._programmed: LocalState | None = None
        self._warned: set[str] = set()

    def warn(self, message: str) -> None:
        """Log ``message`` the first time it happens (a retried failure would flood the log)."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def run(
        self,
        machine: Machine,
        local: LocalState | None,
        remotes: Sequence[RemoteAgent],
        vtep: str,
        *,
        read: bool,
        check_local: bool,
        synced: bool,
    ) -> bool:
        """One pass (see the module); True when the local state was programmed in it (the
        agent then publishes its record)."""
        programmed = False
        if local is not None and (check_local or local != self._programmed):
            if not self._program_local(machine, local):
                self._known = None
                return False
            self._programmed = local
            programmed = True
        desired = desired_state(remotes, vtep)
        if self._known is not None and not read:
            actual = self._known
        else:
            try:
                actual = machine.read_remote(vtep)
            except MachineError as exc:
                self.netlink_errors += 1
                self.warn(str(exc))
                self._known = None
                return programmed
        ops = diff(desired, actual)
        if not synced:
            ops = [op for op in ops if op.action == "replace"]
        if not ops:
            self._known = actual
            return programmed
        result = machine.apply_remote(ops)
        self.reconciles += 1
        if result.errors:
            self.netlink_errors += len(result.errors)
            self.last_errors = result.errors[-10:]
            for error in result.errors[:3]:
                log.warning("netlink: %s", error)
            self._known = None
        else:
            self._known = apply_ops(actual, ops)
        return programmed

    def _program_local(self, machine: Machine, desired: LocalState) -> bool:
        try:
            actual = LocalState(
                devices=machine.read_devices(desired.devices),
                sysctls=machine.read_sysctls(desired.sysctls),
                files=machine.read_files(desired.files, desired.scan),
            )
        except MachineError as exc:
            return self._device_failure(exc)
        try:
            nat = machine.read_nat()
        except MachineError as exc:
            nat = None
            self.local_errors += 1
            self.nat_programmed = False
            self.warn(f"egress NAT: {exc}")
        else:
            self.nat_programmed = nat == desired.nat
        isolation = None
        if desired.isolation is not None:
            try:
                isolation = machine.read_isolation()
            except MachineError as exc:
                self.local_errors += 1
                self.warn(f"isolation: {exc}")
        self.isolation_programmed = desired.isolation is None or isolation == desired.isolation
        actual = LocalState(actual.devices, actual.sysctls, nat, actual.files, isolation=isolation)
        for path in foreign_files(desired, actual):
            self.warn(f"{path} exists and was not written by vxnet: leaving it")
        for op in diff_local(desired, actual):
            if isinstance(op, LoadNat) and nat is None:
                continue  # nft failed already: counted once
            if isinstance(op, LoadIsolation) and isolation is None:
                continue
            try:
                machine.apply_local(op)
            except MachineError as exc:
                if isinstance(op, (*DEVICE_OPS, SetSysctl)):
                    return self._device_failure(exc)
                self.local_errors += 1
                if isinstance(op, LoadNat):
                    self.nat_programmed = False
                    self.warn(f"egress NAT: {exc}")
                elif isinstance(op, LoadIsolation):
                    self.isolation_programmed = False
                    self.warn(f"isolation: {exc}")
                else:
                    self.warn(str(exc))
                continue
            if isinstance(op, LoadNat):
                self.nat_programmed = True
            elif isinstance(op, LoadIsolation):
                self.isolation_programmed = True
                log.info("isolation policy loaded (table inet vxnet-isolation)")
            elif isinstance(op, WriteFile):
                log.info("wrote %s", op.file.path)
            elif isinstance(op, RemoveFile):
                log.info("removed %s (its network is no longer allocated)", op.path)
            else:
                log.debug("%s", op)
        try:
            indices = {name: machine.index(name) for name in desired.devices}
        except MachineError as exc:
            return self._device_failure(exc)
        self.link_indices = {name: i for name, i in indices.items() if i is not None}
        return True

    def _device_failure(self, exc: MachineError) -> bool:
        self.netlink_errors += 1
        log.warning("programming the local overlay devices failed: %s", exc)
        return False
