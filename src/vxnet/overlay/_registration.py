"""Keeping an agent registered with the masters, and its allocation on disk.

The agent registers with the masters its configuration lists (:class:`vxnet.master._client.
MasterClient` tries each, follows the leader and rides out failovers). When no master answers it
backs off with full jitter: it waits a random time up to a bound that starts at 0.5 s and doubles
up to a cap. Once registered it registers again every ``refresh`` seconds, which picks up networks
added to the masters' configuration and proves the allocation is still held after a failover.

Every allocation received is written to ``<state_dir>/overlay.json`` (written to a temporary
file, fsynced, renamed), so that after a restart the agent programs itself from its last
allocation at once, even while no master answers.
"""

from __future__ import annotations

import json
import logging
import os
import random
from typing import TYPE_CHECKING

import trio

from vxnet.master import MasterRefused, MasterUnreachable, open_master_client
from vxnet.records import AgentInfo, RecordError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from vxnet.pki import Tls

__all__ = ["ALLOCATION_FILE", "Registration", "describe", "load_allocation", "save_allocation"]

log = logging.getLogger("vxnet.overlay")

ALLOCATION_FILE = "overlay.json"
REQUEST_PATIENCE = 10.0


def save_allocation(state_dir: Path, info: AgentInfo) -> None:
    """Write ``info`` durably and atomically (a crash leaves the old file or the new one)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / ALLOCATION_FILE
    tmp = state_dir / f".{ALLOCATION_FILE}.tmp"
    with tmp.open("w") as f:
        json.dump(info.to_json(), f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_allocation(state_dir: Path, agent_ip: str) -> AgentInfo | None:
    """The allocation saved for ``agent_ip``, or None (missing, unreadable or another agent's)."""
    path = state_dir / ALLOCATION_FILE
    try:
        info = AgentInfo.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except RecordError as exc:
        log.warning("%s: not an AgentInfo (%s); ignoring it", path, exc)
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot use the saved allocation: %s", path, exc)
        return None
    if info.ip != agent_ip:
        log.warning("%s: saved for agent %s, not %s; ignoring it", path, info.ip, agent_ip)
        return None
    return info


def describe(info: AgentInfo) -> str:
    """An allocation in one line: the VTEP, then each network's subnets or why it has none."""
    parts: list[str] = []
    vxlan = info.vxlan()
    if vxlan is not None:
        parts.append(f"VTEP {vxlan.vtep_ip} {vxlan.vtep_mac}")
    for overlay in info.overlays:
        state = overlay.state
        if overlay.ok:
            parts.append(f"{overlay.name} {' '.join(overlay.subnets()) or '(no subnet)'}")
        else:
            reason = state.error or "no reason given"
            parts.append(f"{overlay.name} {state.status.label} ({reason})")
    return "; ".join(parts) or "no networks"


class Registration:
    """This agent's registration; :meth:`run` keeps it current.

    Args:
        masters: The masters' API addresses (host:port).
        agent_ip: This agent's underlay address (its key at the masters).
        state_dir: Where the last allocation is kept.
        token: The masters' bearer token, if they require one.
        tls: This agent's certificate (role agent), to register over HTTPS; None: plain HTTP.
        networks: The networks wanted (None: every network the masters have).
        mesos_bridge: Whether this agent wants the CNI bridges.
        docker_bridge: Whether this agent wants the Docker bridges.
        refresh: Seconds between registrations once registered.
        backoff: (first, cap) bounds of the jittered wait after a failure.
        patience: Seconds one attempt may take (trying every master, following the leader).
        rng: Randomness of the jitter.
    """

    def __init__(
        self,
        masters: Sequence[str],
        agent_ip: str,
        state_dir: Path,
        *,
        token: str | None = None,
        tls: Tls | None = None,
        networks: Sequence[str] | None = None,
        mesos_bridge: bool = True,
        docker_bridge: bool = True,
        refresh: float = 60.0,
        backoff: tuple[float, float] = (0.5, 60.0),
        patience: float = REQUEST_PATIENCE,
        rng: random.Random | None = None,
    ) -> None:
        self.masters = list(masters)
        self.agent_ip = agent_ip
        self.state_dir = state_dir
        self.token = token
        self.tls = tls
        self.networks = None if networks is None else list(networks)
        self.mesos_bridge = mesos_bridge
        self.docker_bridge = docker_bridge
        self.refresh = refresh
        self.backoff = backoff
        self.patience = patience
        self.rng = rng or random.Random()
        self.info = load_allocation(state_dir, agent_ip)
        self.source = "disk" if self.info is not None else None
        self.attempts = 0
        self.failures = 0
        self.last_error: str | None = None
        self.waits: list[float] = []  # the last backoff waits, for status and tests

    async def run(self, on_change: Callable[[AgentInfo], None]) -> None:
        """Register now and for ever; ``on_change`` gets every allocation that differs.

        The saved allocation, if any, is handed over first, before any master answered.
        """
        if self.info is not None:
            on_change(self.info)
        bound = self.backoff[0]
        failing = False
        while True:
            self.attempts += 1
            try:
                info = await self._register()
            except (MasterUnreachable, MasterRefused, RecordError) as exc:
                self.failures += 1
                self.last_error = str(exc)
                if not failing:
                    log.warning("registration with %s failed: %s", ", ".join(self.masters), exc)
                failing = True
                wait = self.rng.uniform(0, bound)
                self.waits = [*self.waits[-31:], wait]
                await trio.sleep(wait)
                bound = min(bound * 2, self.backoff[1])
                continue
            if failing:
                log.info("registered with the masters again")
            failing = False
            self.last_error = None
            bound = self.backoff[0]
            if info != self.info or self.source != "master":
                changed = info != self.info
                if changed or self.source == "disk":
                    log.info(
                        "allocation from the masters%s: %s",
                        "" if self.info is None else (" (changed)" if changed else ", as saved"),
                        describe(info),
                    )
                await trio.to_thread.run_sync(save_allocation, self.state_dir, info)
                self.info = info
                self.source = "master"
                if changed:
                    on_change(info)
            await trio.sleep(self.refresh)

    async def _register(self) -> AgentInfo:
        """The masters' answer.

        Raises:
            MasterUnreachable, MasterRefused: From the client.
            RecordError: The answer is not an AgentInfo (the masters' fault).
        """
        async with open_master_client(
            self.masters, token=self.token, patience=self.patience, tls=self.tls
        ) as api:
            answer = await api.register(
                self.agent_ip,
                self.networks,
                mesos_bridge=self.mesos_bridge,
                docker_bridge=self.docker_bridge,
            )
        try:
            return AgentInfo.from_json(answer)
        except RecordError as exc:
            raise RecordError(f"the masters answered a bad AgentInfo: {exc}") from None
