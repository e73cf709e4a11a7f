"""The agent's overlay: registration, local devices, its store record, and reconciliation.

Run by ``vxnet agent`` (as root) in the agent's network namespace:

1. :class:`~._registration.Registration` keeps the agent registered and hands over every new
   allocation (the saved one first, before any master answered).
2. For an allocation: the VTEP ``vtep<vni>`` (VNI, UDP port, local = agent IP, no learning, MTU,
   MAC and addresses from the allocation), a bridge ``m-<net>`` with the gateway address of the
   CNI half and the overlay MTU for every network allocated with a CNI bridge, IPv4 (and IPv6)
   forwarding, the CNI network configuration ``<cni_dir>/<net>.conflist`` (:mod:`._cni`; its
   IPAM plugin ``vxnet-ipam`` is written into ``cni_bin_dir``, served by :mod:`._containers`),
   and egress NAT (:mod:`._nat`) when on. Then the agent's ``overlay/<ip>`` record goes into the
   replicated store (written only when it differs from the one there).
3. Reconciling: the remote agents are the live ``overlay/`` records of others (an owner down for
   the store's grace period drops out); their routes, neighbour and FDB entries are diffed
   against what the kernel holds and the difference applied. The agent reconciles when a record
   changes, every second against the state it last applied (cheap: nothing is read), and every
   ``FULL_EVERY`` seconds against a fresh read of the kernel. Netlink notifications wake it at
   once when someone else deletes an owned route, neighbour or FDB entry, or changes or removes
   one of its devices; it then reads the kernel and repairs (devices too, for a device event).
   Netlink errors are counted and retried at the next pass, never fatal. Nothing is deleted
   before the agent's store has synced with a peer, so a restart drops no entry.

Kernel calls run in one worker thread (pyroute2 is synchronous), one at a time.
"""

from __future__ import annotations

import errno
import functools
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from vxnet.overlay._cni import conflists, remove_stale, write_conflist
from vxnet.overlay._containers import Containers
from vxnet.overlay._diff import apply_ops, compare, diff
from vxnet.overlay._dockernet import DockerNetworks
from vxnet.overlay._model import KernelState, RemoteAgent, desired_state
from vxnet.overlay._nat import NatError, apply_ruleset, nat_ruleset, present_tables
from vxnet.overlay._records import RECORD_PREFIX, RecordError, overlay_record, remote_from_record
from vxnet.overlay._registration import Registration

if TYPE_CHECKING:
    from vxnet.config import AgentConfig
    from vxnet.gossip import GossipService
    from vxnet.overlay._netlink import Kernel
    from vxnet.records import AgentInfo, VxLAN

__all__ = ["FULL_EVERY", "OverlayService"]

log = logging.getLogger("vxnet.overlay")

PLUGIN_MARK = "# vxnet-ipam, written by the vxnet agent"
PLUGIN_SCRIPT = f"""#!{{python}} -IS
{PLUGIN_MARK} (see vxnet.ipam_plugin); rewritten at its start
import sys
sys.path.insert(0, {{path!r}})
from vxnet.ipam_plugin import main
sys.exit(main({{socket!r}}))
"""
FULL_EVERY = 10.0
QUICK_EVERY = 1.0
EVENT_RECV = 1 << 16
# For an allocation saved by an older vxnet, whose AgentInfo lacks them: the [network] defaults.
VXLAN_PORT = 64000
VTEP_MTU = 1500
OVERLAY_MTU = 1420


class OverlayService:
    """One agent's overlay; :meth:`run` until cancelled.

    Args:
        config: The agent's configuration.
        gossip: The agent's gossip node (store and membership).
        agent_ip: This agent's underlay address.
    """

    def __init__(self, config: AgentConfig, gossip: GossipService, agent_ip: str) -> None:
        self.config = config
        self.gossip = gossip
        self.agent_ip = agent_ip
        self.registration = Registration(
            config.agent.masters,
            agent_ip,
            Path(config.agent.state_dir),
            token=config.agent.master_token,
        )
        self.containers = Containers(gossip, agent_ip, Path(config.agent.state_dir).absolute())
        self.docker: DockerNetworks | None = None
        if config.agent.docker:
            self.docker = DockerNetworks(
                self.containers, config.agent.docker_socket, "vtep1024", OVERLAY_MTU
            )
        self.info: AgentInfo | None = None
        self.remotes: list[RemoteAgent] = []
        self.bad_records: dict[str, str] = {}
        self.netlink_errors = 0
        self.local_errors = 0
        self.reconciles = 0
        self.repairs = 0
        self.kernel_events = 0
        self.last_errors: list[str] = []
        self.nat_ruleset: str | None = None
        self._warned: set[str] = set()
        self._known: KernelState | None = None
        self._programmed: AgentInfo | None = None
        self._kernel: Kernel | None = None
        self._ipr: Any = None
        self._vtep_index: int | None = None
        self._link_indices: frozenset[int] = frozenset()
        self._repair: set[str] = set()
        self._limiter = trio.CapacityLimiter(1)
        self._wake = trio.Event()

    @property
    def vtep(self) -> str:
        vxlan = self._vxlan() if self.info else None
        return f"vtep{1024 if vxlan is None or vxlan.vni is None else vxlan.vni}"

    async def run(self) -> None:
        """Run until cancelled.

        Raises:
            OSError: The IPAM socket cannot be created.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self.containers.serve_ipam)
            self.containers.publish_all()
            nursery.start_soon(self.registration.run, self._on_allocation)
            if self.docker is not None:
                nursery.start_soon(self.docker.run)
            nursery.start_soon(self._watch_store)
            nursery.start_soon(self._watch_kernel)
            nursery.start_soon(self._loop)

    def _on_allocation(self, info: AgentInfo) -> None:
        self.info = info
        self.containers.set_info(info)
        if self.docker is not None:
            self.docker.vtep = self.vtep
            self.docker.set_info(info)
        self._wake.set()

    async def _watch_store(self) -> None:
        while True:
            subscription = self.gossip.subscribe(RECORD_PREFIX)
            async for _ in subscription.changes:
                self._wake.set()
            self._wake.set()  # overflowed: start again from the whole store

    async def _watch_kernel(self) -> None:
        """Wake the loop when someone else deletes an owned object or touches a device."""
        from vxnet.overlay._netlink import event_socket, owned_changes

        try:
            sock = trio.socket.from_stdlib_socket(event_socket())
        except OSError as exc:
            log.warning("no netlink notifications (%s): repairs wait for the full reconcile", exc)
            return
        with sock:
            while True:
                try:
                    data = await sock.recv(EVENT_RECV)
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    kinds = {"route", "link"}  # notifications were lost: check everything
                else:
                    kinds = owned_changes(data, self._vtep_index, self._link_indices)
                if kinds:
                    self.kernel_events += 1
                    self._repair |= kinds
                    self._wake.set()

    async def _loop(self) -> None:
        last_full = -FULL_EVERY
        while True:
            with trio.move_on_after(QUICK_EVERY):
                await self._wake.wait()
            self._wake = trio.Event()
            if self.info is None:
                continue
            repair, self._repair = self._repair, set()
            timed = trio.current_time() - last_full >= FULL_EVERY
            if timed:
                last_full = trio.current_time()
            if repair & {"route", "neighbour"}:
                self.repairs += 1
            local = timed or "link" in repair
            synced = self.gossip.synced.is_set()
            await trio.to_thread.run_sync(
                self._pass, timed or bool(repair), local, synced, limiter=self._limiter
            )

    def _vxlan(self) -> VxLAN | None:
        assert self.info is not None
        return self.info.vxlan()

    def _warn(self, message: str) -> None:
        """Log ``message`` the first time it happens (a retried failure would flood the log)."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    async def status(self) -> dict[str, Any]:
        """What ``GET /overlay-agent/status`` shows: the allocation, the kernel against the
        desired state, NAT, CNI files, counters."""
        return await trio.to_thread.run_sync(self._status, limiter=self._limiter)

    # --- in the worker thread ------------------------------------------------------------------

    def _kernel_handle(self) -> Kernel:
        if self._kernel is None:
            from pyroute2 import IPRoute

            from vxnet.overlay._netlink import Kernel

            self._ipr = IPRoute()
            self._kernel = Kernel(self._ipr)
        return self._kernel

    def _pass(self, read: bool, local: bool, synced: bool) -> None:
        """One reconcile. Until the store has synced with the cluster (``synced``) a missing
        record may only be one not received yet, so nothing is deleted: a restarted agent keeps
        every entry and traffic through it never stops."""
        info = self.info
        assert info is not None
        kernel = self._kernel_handle()
        if info is not self._programmed or local:
            try:
                self._program_local(kernel, info)
            except Exception as exc:
                self.netlink_errors += 1
                log.warning("programming the local overlay devices failed: %s", exc)
                self._known = None
                return
            self._programmed = info
        remotes = self._read_remotes()
        self.remotes = remotes
        desired = desired_state(remotes, self.vtep)
        actual = self._known if self._known is not None and not read else kernel.read(self.vtep)
        ops = diff(desired, actual)
        if not synced:
            ops = [op for op in ops if op.action == "replace"]
        if not ops:
            self._known = actual
            return
        result = kernel.apply(ops)
        self.reconciles += 1
        if result.errors:
            self.netlink_errors += len(result.errors)
            self.last_errors = result.errors[-10:]
            for error in result.errors[:3]:
                log.warning("netlink: %s", error)
            self._known = None
        else:
            self._known = apply_ops(actual, ops)

    def _program_local(self, kernel: Kernel, info: AgentInfo) -> None:
        vxlan = self._vxlan()
        if vxlan is None:
            return
        kernel.ensure_vtep(
            self.vtep,
            1024 if vxlan.vni is None else vxlan.vni,
            VXLAN_PORT if vxlan.vxlan_port is None else vxlan.vxlan_port,
            self.agent_ip,
            vxlan.vtep_mac.lower(),
            vxlan.vtep_ip,
            vxlan.vtep_ip6,
            VTEP_MTU if vxlan.vtep_mtu is None else vxlan.vtep_mtu,
        )
        links = [kernel.index(self.vtep)]
        for overlay in info.usable():
            bridge = overlay.mesos_bridge
            if bridge is None:
                continue
            name = bridge.name
            mtu = OVERLAY_MTU if bridge.mtu is None else bridge.mtu
            kernel.ensure_bridge(name, bridge.ip, bridge.ip6, mtu)
            links.append(kernel.index(name))
        self._vtep_index = links[0]
        self._link_indices = frozenset(i for i in links if i is not None)
        _sysctl("net/ipv4/ip_forward", "1")
        _sysctl("net/ipv6/conf/all/forwarding", "1")
        self._write_conflists(info)
        self._program_nat(info)
        try:
            record = overlay_record(info)
        except RecordError as exc:
            self._warn(str(exc))
            return
        trio.from_thread.run_sync(self._publish, record)

    def _publish(self, record: dict[str, Any]) -> None:
        key = f"{RECORD_PREFIX}{self.agent_ip}"
        held = [r for r in self.gossip.records(key) if r["key"] == key]
        if not held or held[0]["value"] != record:
            self.gossip.put(key, record)

    def _write_conflists(self, info: AgentInfo) -> None:
        self._install_plugin()
        directory = Path(self.config.agent.cni_dir)
        files = conflists(info, str(self.containers.socket_path), OVERLAY_MTU)
        try:
            for filename, data in files.items():
                if write_conflist(directory, filename, data):
                    log.info("wrote %s", directory / filename)
            for filename in remove_stale(directory, set(files)):
                log.info("removed %s (its network is no longer allocated)", directory / filename)
        except OSError as exc:
            self.local_errors += 1
            self._warn(f"cannot write the CNI configuration in {directory}: {exc}")

    def _install_plugin(self) -> None:
        """Write ``vxnet-ipam`` into ``agent.cni_bin_dir``: this Python, started with ``-I -S``
        (nothing to scan at start-up), running :mod:`vxnet.ipam_plugin` from this installation."""
        if not self.config.agent.cni_bin_dir:
            return
        import vxnet

        path = Path(self.config.agent.cni_bin_dir) / "vxnet-ipam"
        text = PLUGIN_SCRIPT.format(
            python=_plugin_python(),
            path=str(Path(vxnet.__file__).parent.parent),
            socket=str(self.containers.socket_path),
        )
        try:
            try:
                old = path.read_text()
            except FileNotFoundError:
                old = None
            except (OSError, UnicodeDecodeError):
                old = ""
            if old == text:
                return
            if old is not None and PLUGIN_MARK not in old:
                self._warn(f"{path} exists and was not written by vxnet: leaving it")
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(".vxnet-ipam.tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.replace(path)
            log.info("wrote the IPAM plugin %s", path)
        except OSError as exc:
            self.local_errors += 1
            self._warn(f"cannot write the IPAM plugin into {path.parent}: {exc}")

    def _program_nat(self, info: AgentInfo) -> None:
        subnets: list[str] = []
        subnets6: list[str] = []
        for overlay in info.overlays:
            network = overlay.info
            if network.subnet:
                subnets.append(network.subnet)
            if network.subnet6:
                subnets6.append(network.subnet6)
        if not self.config.agent.egress_nat:
            subnets, subnets6 = [], []
        ruleset = nat_ruleset(subnets, subnets6, self.vtep)
        wanted = {f for f, nets in (("ip", subnets), ("ip6", subnets6)) if nets}
        try:
            if ruleset == self.nat_ruleset and present_tables() == wanted:
                return
            apply_ruleset(ruleset)
        except NatError as exc:
            self.local_errors += 1
            self.nat_ruleset = None
            self._warn(f"egress NAT: {exc}")
            return
        self.nat_ruleset = ruleset

    def _read_remotes(self) -> list[RemoteAgent]:
        records = trio.from_thread.run_sync(self._live_records)
        remotes: list[RemoteAgent] = []
        bad: dict[str, str] = {}
        own = f"{RECORD_PREFIX}{self.agent_ip}"
        for record in records:
            key = record["key"]
            if key == own:
                continue
            try:
                remotes.append(remote_from_record(key, record["value"]))
            except RecordError as exc:
                bad[key] = str(exc)
        for key in set(bad) - set(self.bad_records):
            log.warning("ignoring a store record: %s", bad[key])
        self.bad_records = bad
        return remotes

    def _live_records(self) -> list[dict[str, Any]]:
        return self.gossip.records(RECORD_PREFIX, live=True)

    def _status(self) -> dict[str, Any]:
        registration = self.registration
        out: dict[str, Any] = {
            "agent_ip": self.agent_ip,
            "registration": {
                "source": registration.source,
                "attempts": registration.attempts,
                "failures": registration.failures,
                "last_error": registration.last_error,
            },
            "info": None if self.info is None else self.info.to_json(),
            "vtep": self.vtep,
            "egress_nat": self.config.agent.egress_nat,
            "docker": {
                "enabled": self.docker is not None,
                "socket": self.config.agent.docker_socket,
                "available": self.docker is not None and self.docker.available,
            },
            "nat_programmed": self.nat_ruleset is not None,
            "cni_dir": self.config.agent.cni_dir,
            "counters": {
                "reconciles": self.reconciles,
                "repairs": self.repairs,
                "kernel_events": self.kernel_events,
                "netlink_errors": self.netlink_errors,
                "local_errors": self.local_errors,
            },
            "last_errors": self.last_errors,
            "bad_records": self.bad_records,
            "remotes": [r.ip for r in sorted(self.remotes, key=lambda r: r.ip)],
            "objects": [],
        }
        if self.info is None:
            return out
        try:
            actual = self._kernel_handle().read(self.vtep)
        except Exception as exc:
            out["kernel_error"] = str(exc)
            return out
        out["objects"] = compare(desired_state(self.remotes, self.vtep), actual)
        return out

    def close(self) -> None:
        """Release the netlink socket."""
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
            self._kernel = None


@functools.cache
def _plugin_python() -> str:
    """The interpreter that starts fastest for ``vxnet-ipam``, which needs only the standard
    library and its own module (its directory is put on sys.path): the system's ``python3`` (a
    distribution's build is optimised) when it is 3.9 or newer, else the one under this venv."""
    import subprocess

    for candidate in ("/usr/bin/python3", getattr(sys, "_base_executable", "")):
        if not candidate or not Path(candidate).exists():
            continue
        try:
            done = subprocess.run(
                [candidate, "-IS", "-c", "import sys; sys.exit(sys.version_info < (3, 9))"],
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return candidate
    return sys.executable


def _sysctl(name: str, value: str) -> None:
    path = Path("/proc/sys") / name
    if path.read_text().strip() != value:
        path.write_text(value)
