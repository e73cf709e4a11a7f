"""The agent's overlay service: registration, its store record, and the reconcile loop.

Run by ``vxnet agent`` (as root) in the agent's network namespace:

1. :class:`~._registration.Registration` keeps the agent registered and hands over every new
   allocation (the saved one first, before any master answered).
2. For an allocation, the local state (:mod:`._local`: the VTEP, the bridges, forwarding, the
   CNI configurations and the IPAM plugin launcher of :mod:`._launcher`, egress NAT) is
   reconciled against the host's; then the agent's ``overlay/<ip>`` record goes into the
   replicated store (written only when it differs from the one there).
3. The remote agents are the live ``overlay/`` records of others (an owner down for the store's
   grace period drops out); their routes, neighbour and FDB entries are reconciled against what
   the kernel holds. One pass does both (:class:`~._reconcile.Reconciler`, over a
   :class:`~._machine.LinuxMachine`): when a record changes, every second against the state it
   last applied (cheap: nothing is read), and every ``FULL_EVERY`` seconds against a fresh read
   of the host. Netlink notifications wake it at once when someone else deletes an owned route,
   neighbour or FDB entry, or changes or removes one of its devices; it then reads the kernel and
   repairs (devices too, for a device event). Errors are counted and retried at the next pass,
   never fatal. Nothing is deleted before the agent's store has synced with a peer, so a
   restart drops no entry.

Host calls run in one worker thread (pyroute2 is synchronous), one at a time. The status
document is :mod:`._status`'s.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from vxnet.overlay._cni import Nameservers
from vxnet.overlay._containers import Containers
from vxnet.overlay._dockernet import DockerNetworks
from vxnet.overlay._launcher import plugin_file, plugin_python
from vxnet.overlay._local import OVERLAY_MTU, LocalSettings, desired_local, vtep_name
from vxnet.overlay._reconcile import Reconciler
from vxnet.overlay._records import RECORD_PREFIX, RecordError, overlay_record, remote_from_record
from vxnet.overlay._registration import Registration
from vxnet.overlay._status import overlay_status

if TYPE_CHECKING:
    from vxnet.config import AgentConfig
    from vxnet.gossip import GossipService
    from vxnet.overlay._isolation import Policy
    from vxnet.overlay._machine import LinuxMachine
    from vxnet.overlay._model import KernelState, RemoteAgent
    from vxnet.pki import Tls
    from vxnet.records import AgentInfo

__all__ = ["FULL_EVERY", "OverlayService"]

log = logging.getLogger("vxnet.overlay")

FULL_EVERY = 10.0
QUICK_EVERY = 1.0
POLICY_RETRY = 1.0  # seconds before asking the masters for the policy again after a failure
EVENT_RECV = 1 << 16


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
            tls=_agent_tls(config),
        )
        dns = config.dns
        nameservers = Nameservers(dns.container_addresses, dns.search) if dns.enabled else None
        self.containers = Containers(
            gossip,
            agent_ip,
            Path(config.agent.state_dir).absolute(),
            None if nameservers is None else nameservers.cni(),
        )
        self.docker: DockerNetworks | None = None
        if config.agent.docker:
            self.docker = DockerNetworks(
                self.containers, config.agent.docker_socket, "vtep1024", OVERLAY_MTU
            )
        self.info: AgentInfo | None = None
        self.remotes: list[RemoteAgent] = []
        self.bad_records: dict[str, str] = {}
        self.reconciler = Reconciler()
        self.repairs = 0
        self.kernel_events = 0
        self._machine: LinuxMachine | None = None
        self._ipr: Any = None
        self._settings: LocalSettings | None = None
        self._repair: set[str] = set()
        self._limiter = trio.CapacityLimiter(1)
        self._wake = trio.Event()
        self.policy: Policy | None = None  # the masters' isolation policy, once heard
        self.policy_version: str | None = None
        self._local_due = False  # the desired local state changed: program it on the next pass

    @property
    def vtep(self) -> str:
        return vtep_name(self.info)

    @property
    def reconciles(self) -> int:
        """Passes that changed remote objects."""
        return self.reconciler.reconciles

    @property
    def netlink_errors(self) -> int:
        """Failed netlink requests (and reads), local devices included."""
        return self.reconciler.netlink_errors

    @property
    def local_errors(self) -> int:
        """Failed CNI file, IPAM plugin and NAT updates."""
        return self.reconciler.local_errors

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
            nursery.start_soon(self._watch_policy)
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

    async def _watch_policy(self) -> None:
        """Follow the masters' network configuration (a long poll) and apply each new isolation
        policy at once."""
        from vxnet.master import MasterRefused, MasterUnreachable, open_master_client
        from vxnet.overlay._isolation import policy_from_network

        reg = self.registration
        async with open_master_client(
            reg.masters, token=reg.token, patience=reg.patience, tls=reg.tls
        ) as api:
            while True:
                path = "/overlay-master/network"
                if self.policy_version is not None:
                    path += f"?after={self.policy_version}"
                try:
                    answer = await api.call("GET", path)
                    version = str(answer["version"])
                    policy = policy_from_network(answer["network"])
                except (MasterUnreachable, MasterRefused, KeyError, TypeError, ValueError) as exc:
                    log.warning("isolation policy not read from the masters: %s", exc)
                    await trio.sleep(POLICY_RETRY)
                    continue
                if version != self.policy_version:
                    if policy != self.policy:
                        log.info(
                            "isolation policy %s: %s, %d allowed pairs",
                            version,
                            "on" if policy.isolation else "off",
                            len(policy.allow),
                        )
                    self.policy, self.policy_version = policy, version
                    self._local_due = True
                    self._wake.set()

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
                    links = self.reconciler.link_indices
                    kinds = owned_changes(data, links.get(self.vtep), links.values())
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
            local = timed or "link" in repair or self._local_due
            self._local_due = False
            synced = self.gossip.synced.is_set()
            await trio.to_thread.run_sync(
                self._pass, timed or bool(repair), local, synced, limiter=self._limiter
            )

    async def status(self) -> dict[str, Any]:
        """What ``GET /overlay-agent/status`` shows: the allocation, the kernel against the
        desired state, NAT, CNI files, counters."""
        return await trio.to_thread.run_sync(self._status, limiter=self._limiter)

    # --- in the worker thread ------------------------------------------------------------------

    def _machine_handle(self) -> LinuxMachine:
        if self._machine is None:
            from pyroute2 import IPRoute

            from vxnet.overlay._machine import LinuxMachine

            self._ipr = IPRoute()
            self._machine = LinuxMachine(self._ipr)
        return self._machine

    def _local_settings(self) -> LocalSettings:
        if self._settings is None:
            import vxnet

            agent = self.config.agent
            socket = str(self.containers.socket_path)
            plugin = None
            if agent.cni_bin_dir:
                source = str(Path(vxnet.__file__).parent.parent)
                plugin = plugin_file(agent.cni_bin_dir, plugin_python(), source, socket)
            dns = self.config.dns
            self._settings = LocalSettings(
                self.agent_ip,
                agent.cni_dir,
                socket,
                agent.egress_nat,
                plugin,
                dns_addresses=dns.container_addresses if dns.enabled else (),
                dns_search=dns.search if dns.enabled else (),
            )
        return self._settings

    def _pass(self, read: bool, local: bool, synced: bool) -> None:
        """One reconcile (:meth:`~._reconcile.Reconciler.run`), then the record if the local
        state was programmed."""
        info = self.info
        assert info is not None
        machine = self._machine_handle()
        desired = desired_local(info, self._local_settings(), self.policy)
        remotes = self._read_remotes()
        self.remotes = remotes
        programmed = self.reconciler.run(
            machine, desired, remotes, self.vtep, read=read, check_local=local, synced=synced
        )
        if not programmed:
            return
        try:
            record = overlay_record(info)
        except RecordError as exc:
            self.reconciler.warn(str(exc))
            return
        trio.from_thread.run_sync(self._publish, record)

    def _publish(self, record: dict[str, Any]) -> None:
        key = f"{RECORD_PREFIX}{self.agent_ip}"
        held = [r for r in self.gossip.records(key) if r["key"] == key]
        if not held or held[0]["value"] != record:
            self.gossip.put(key, record)

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
        actual: KernelState | str | None = None
        if self.info is not None:
            from vxnet.overlay._machine import MachineError

            try:
                actual = self._machine_handle().read_remote(self.vtep)
            except (MachineError, OSError) as exc:
                actual = str(exc)
        return overlay_status(
            agent_ip=self.agent_ip,
            config=self.config,
            registration=self.registration,
            info=self.info,
            vtep=self.vtep,
            docker=self.docker,
            reconciler=self.reconciler,
            repairs=self.repairs,
            kernel_events=self.kernel_events,
            bad_records=self.bad_records,
            remotes=self.remotes,
            actual=actual,
            policy=self.policy,
            policy_version=self.policy_version,
        )

    def close(self) -> None:
        """Release the netlink socket."""
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
            self._machine = None


def _agent_tls(config: AgentConfig) -> Tls | None:
    """The agent's TLS from its ``[tls]`` (None: plain HTTP to the masters).

    Raises:
        ValueError: A file cannot be used, or the certificate is not an agent's.
    """
    from vxnet.pki import PkiError, tls_of

    try:
        return tls_of(config.tls.ca, config.tls.cert, config.tls.key, "agent")
    except PkiError as exc:
        raise ValueError(f"[tls]: {exc}") from None
