"""The agent's overlay: registration, local devices, its store record, and reconciliation.

Run by ``vxnet agent`` (as root) in the agent's network namespace:

1. :class:`~._registration.Registration` keeps the agent registered and hands over every new
   allocation (the saved one first, before any master answered).
2. For an allocation: the VTEP ``vtep<vni>`` (VNI, UDP port, local = agent IP, no learning, MAC
   and addresses from the allocation), a bridge ``m-<net>`` with the gateway address of the CNI
   half for every network allocated with a CNI bridge, and IPv4 (and IPv6) forwarding on. Then
   the agent's ``overlay/<ip>`` record goes into the replicated store.
3. Reconciling: the remote agents are the live ``overlay/`` records of others (an owner down for
   the store's grace period drops out); their routes, neighbour and FDB entries are diffed
   against what the kernel holds and the difference applied. The agent reconciles when a record
   changes, every second against the state it last applied (cheap: nothing is read), and every
   ``FULL_EVERY`` seconds against a fresh read of the kernel, which repairs what someone else
   changed. Netlink errors are counted and retried at the next pass, never fatal.

Kernel calls run in one worker thread (pyroute2 is synchronous), one at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from vxnet.overlay._diff import apply_ops, diff
from vxnet.overlay._model import KernelState, RemoteAgent, desired_state
from vxnet.overlay._records import RECORD_PREFIX, RecordError, overlay_record, remote_from_record
from vxnet.overlay._registration import Registration

if TYPE_CHECKING:
    from vxnet.config import AgentConfig
    from vxnet.gossip import GossipService
    from vxnet.overlay._netlink import Kernel

__all__ = ["FULL_EVERY", "OverlayService"]

log = logging.getLogger("vxnet.overlay")

FULL_EVERY = 10.0
QUICK_EVERY = 1.0
# Until AgentInfo carries them (next step), the defaults of [network]:
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
        self.info: dict[str, Any] | None = None
        self.remotes: list[RemoteAgent] = []
        self.bad_records: dict[str, str] = {}
        self.netlink_errors = 0
        self.reconciles = 0
        self.last_errors: list[str] = []
        self._known: KernelState | None = None
        self._programmed: dict[str, Any] | None = None
        self._kernel: Kernel | None = None
        self._ipr: Any = None
        self._limiter = trio.CapacityLimiter(1)
        self._wake = trio.Event()

    @property
    def vtep(self) -> str:
        return f"vtep{self._vxlan().get('vni', 1024)}" if self.info else "vtep1024"

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.registration.run, self._on_allocation)
            nursery.start_soon(self._watch_store)
            nursery.start_soon(self._loop)

    def _on_allocation(self, info: dict[str, Any]) -> None:
        self.info = info
        self._wake.set()

    async def _watch_store(self) -> None:
        while True:
            subscription = self.gossip.subscribe(RECORD_PREFIX)
            async for _ in subscription.changes:
                self._wake.set()
            self._wake.set()  # overflowed: start again from the whole store

    async def _loop(self) -> None:
        last_full = -FULL_EVERY
        while True:
            with trio.move_on_after(QUICK_EVERY):
                await self._wake.wait()
            self._wake = trio.Event()
            if self.info is None:
                continue
            full = trio.current_time() - last_full >= FULL_EVERY
            if full:
                last_full = trio.current_time()
            await trio.to_thread.run_sync(self._pass, full, limiter=self._limiter)

    def _vxlan(self) -> dict[str, Any]:
        assert self.info is not None
        for overlay in self.info.get("overlays", []):
            vxlan = overlay.get("backend", {}).get("vxlan")
            if vxlan:
                return dict(vxlan)
        return {}

    # --- in the worker thread ------------------------------------------------------------------

    def _kernel_handle(self) -> Kernel:
        if self._kernel is None:
            from pyroute2 import IPRoute

            from vxnet.overlay._netlink import Kernel

            self._ipr = IPRoute()
            self._kernel = Kernel(self._ipr)
        return self._kernel

    def _pass(self, full: bool) -> None:
        info = self.info
        assert info is not None
        kernel = self._kernel_handle()
        if info is not self._programmed or full:
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
        actual = self._known if self._known is not None and not full else kernel.read(self.vtep)
        ops = diff(desired, actual)
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

    def _program_local(self, kernel: Kernel, info: dict[str, Any]) -> None:
        vxlan = self._vxlan()
        if not vxlan:
            return
        kernel.ensure_vtep(
            self.vtep,
            int(vxlan.get("vni", 1024)),
            int(vxlan.get("vxlan_port", VXLAN_PORT)),
            self.agent_ip,
            str(vxlan["vtep_mac"]).lower(),
            str(vxlan["vtep_ip"]),
            vxlan.get("vtep_ip6"),
            int(vxlan.get("vtep_mtu", VTEP_MTU)),
        )
        for overlay in info.get("overlays", []):
            bridge = overlay.get("mesos_bridge")
            if overlay.get("state", {}).get("status") != "STATUS_OK" or not bridge:
                continue
            kernel.ensure_bridge(
                str(bridge["name"]), bridge.get("ip"), bridge.get("ip6"), OVERLAY_MTU
            )
        _sysctl("net/ipv4/ip_forward", "1")
        _sysctl("net/ipv6/conf/all/forwarding", "1")
        try:
            record = overlay_record(info)
        except RecordError as exc:
            log.warning("%s", exc)
            return
        trio.from_thread.run_sync(self.gossip.put, f"{RECORD_PREFIX}{self.agent_ip}", record)

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

    def close(self) -> None:
        """Release the netlink socket."""
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
            self._kernel = None


def _sysctl(name: str, value: str) -> None:
    path = Path("/proc/sys") / name
    if path.read_text().strip() != value:
        path.write_text(value)
