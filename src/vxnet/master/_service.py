"""One master: the replicated log, the allocator applied from it, and the rules between them.

Every master runs a replica of the log and applies its chosen entries, in order, to its own
:class:`~._allocator.Allocator`; so every master holds the same allocation state. Only the
coordinator of the log answers registrations: it appends the registration and answers with the
outcome of applying it, so an answer is never given before the allocation is in the log. A
registration that would change nothing is answered from the state without a write, once the
coordinator has applied every entry chosen before its election (:attr:`Replica.leading`).

The network configuration in force is replicated too: the first entry a new log gets is the
coordinator's ``[network]``; a coordinator whose configuration differs appends it when the change
is safe (networks added, or changed or removed where no agent holds a subnet) and refuses it
otherwise. At start, a master whose configuration would change or remove a network that agents
still use (by its own copy of the log) stops with an error naming them.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from vxnet.master._allocator import Allocator, Outcome, agent_address_problem, network_json
from vxnet.pki import PkiError
from vxnet.replog import (
    LOG_FILE,
    AppendUncertain,
    NotLeader,
    ReplicatedLog,
    log_addresses,
    log_tls,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vxnet.config import MasterConfig
    from vxnet.records import AgentInfo
    from vxnet.replog import LogStorage, LogTiming, Snapshot

__all__ = [
    "COMPACT_EVERY",
    "AllocationFailed",
    "MasterConfigError",
    "MasterService",
    "MasterUnavailable",
]

log = logging.getLogger("vxnet.master")

COMPACT_EVERY = 1000  # applied entries between snapshots of the allocator
OUTCOMES_KEPT = 65536
CONFIG_CHECK_EVERY = 0.5
LEADER_API_CHECK = 1.0  # a follower asks the leader's API this often whether it answers


class MasterUnavailable(Exception):
    """This master cannot answer now: it does not lead (``leader`` says who does, if known), it
    is catching up, or the append's fate is unknown. ``retry_after`` is a hint in seconds."""

    def __init__(self, message: str, leader: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.leader = leader
        self.retry_after = retry_after


class AllocationFailed(Exception):
    """The registration was applied and refused (for example no VTEP address is left)."""


class MasterConfigError(Exception):
    """The master's configuration conflicts with the allocations in the log, or names TLS files
    it cannot use."""


def _load_snapshot(data: bytes) -> tuple[Allocator, bool]:
    """The allocator and the ``network_in_log`` flag of a master's snapshot.

    Raises:
        ValueError: ``data`` is not a master's snapshot; the text says why.
    """
    import msgpack

    try:
        body = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not msgpack: {exc}") from None
    if not isinstance(body, dict) or set(body) != {"allocator", "network_in_log"}:
        raise ValueError("not a map of 'allocator' and 'network_in_log'")
    allocator, flag = body["allocator"], body["network_in_log"]
    if not isinstance(allocator, bytes) or not isinstance(flag, bool):
        raise ValueError("'allocator' must be bytes and 'network_in_log' a boolean")
    return Allocator.restore(allocator), flag


def snapshot_problem(data: bytes) -> str | None:
    """Why a master could not start from snapshot ``data`` (a peer's), or None."""
    try:
        _load_snapshot(data)
    except ValueError as exc:
        return str(exc)
    return None


class MasterService:
    """The state of one master and the operations of its API.

    Args:
        config: The master configuration.
        storage: The log's disk (default: SQLite in ``master.data_dir``).
        timing: The log's timeouts.
    """

    def __init__(
        self,
        config: MasterConfig,
        *,
        storage: LogStorage | None = None,
        timing: LogTiming | None = None,
    ) -> None:
        from pathlib import Path

        from vxnet.config import parse_hostport
        from vxnet.replog import SqliteLogStorage

        self.config = config
        self.allocator = Allocator(config.network)
        self.network_in_log = False
        replica_id, addresses, listen = log_addresses(config.log)
        try:
            tls = log_tls(config.tls)
        except PkiError as exc:
            raise MasterConfigError(f"[tls]: {exc}") from None
        self.tls = tls  # the log's and the API's (None: plain TCP and HTTP)
        if storage is None:
            storage = SqliteLogStorage(Path(config.master.data_dir) / LOG_FILE)
        self.log = ReplicatedLog(
            replica_id,
            addresses,
            storage,
            listen=listen,
            timing=timing,
            on_apply=self._apply,
            on_snapshot=self._install,
            check_snapshot=snapshot_problem,
            tls=tls,
        )
        self.api_port = parse_hostport(config.master.listen, any_port=True)[1]
        self.config_conflict: list[str] = []
        self.append_seconds: list[float] = []  # recent log append latencies, for metrics
        self._outcomes: collections.OrderedDict[int, Outcome] = collections.OrderedDict()
        self._last_snapshot = 0
        self._appending = 0  # appends waiting for their position
        self.leader_api_down: str | None = None  # the leader's API URL while it does not answer
        # set (and replaced) whenever the network configuration in force changes
        self.network_changed = trio.Event()
        self._network_seen = self.allocator.network
        self._network_version: tuple[object, str] | None = None

    # --- applying the log ----------------------------------------------------------------------

    def _apply(self, position: int, value: bytes) -> None:
        if value:
            # Only an append in flight on this master reads an outcome (a follower has none).
            outcome = self.allocator.apply(value, answer=self._appending > 0)
            if outcome.ok and not self.network_in_log and _is_network_command(value):
                self.network_in_log = True
            self._outcomes[position] = outcome
            while len(self._outcomes) > OUTCOMES_KEPT:
                self._outcomes.popitem(last=False)
            self._note_network()
        if position + 1 - self._last_snapshot >= COMPACT_EVERY:
            self._last_snapshot = position + 1
            self.log.compact(position + 1, self._snapshot_bytes())

    def _install(self, snapshot: Snapshot) -> None:
        # The log stored only snapshots that snapshot_problem passed, so this cannot fail.
        self.allocator, self.network_in_log = _load_snapshot(snapshot.data)
        self._last_snapshot = snapshot.position
        self._note_network()

    def _note_network(self) -> None:
        if self.allocator.network is not self._network_seen:
            self._network_seen = self.allocator.network
            self.network_changed.set()
            self.network_changed = trio.Event()

    def network_view(self) -> tuple[str, dict[str, Any]]:
        """The network configuration in force as JSON, and its version: a digest of it, the
        same on every master (computed once per configuration)."""
        network = self.allocator.network
        body = network_json(network)
        cached = self._network_version
        if cached is None or cached[0] is not network:
            text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            cached = (network, hashlib.sha256(text).hexdigest()[:16])
            self._network_version = cached
        return cached[1], body

    def _snapshot_bytes(self) -> bytes:
        import msgpack

        data: bytes = msgpack.packb(
            {"allocator": self.allocator.snapshot(), "network_in_log": self.network_in_log},
            use_bin_type=True,
        )
        return data

    # --- serving --------------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the log replica and keep the replicated network config in line with ours.

        Raises:
            MasterConfigError: Our ``[network]`` would change or remove networks agents hold.
            StorageFailure: The log's disk failed.
        """
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(self.log.serve)
            if self.network_in_log:
                problems = self.allocator.network_change_problems(self.config.network)
                if problems:
                    raise MasterConfigError(
                        "the [network] configuration conflicts with the allocations in the "
                        "replicated log: " + "; ".join(problems)
                    )
            nursery.start_soon(self._keep_network)
            nursery.start_soon(self._watch_leader_api)
            task_status.started(bound)

    async def _keep_network(self) -> None:
        """As the coordinator, append our network config when the log's differs and it is safe."""
        while True:
            await trio.sleep(CONFIG_CHECK_EVERY if self.network_in_log else 0.02)
            core = self.log.replica
            if core is None or not core.leading:
                continue
            if self.network_in_log and network_json(self.allocator.network) == network_json(
                self.config.network
            ):
                self.config_conflict = []
                continue
            problems = self.allocator.network_change_problems(self.config.network)
            if problems and self.network_in_log:
                if problems != self.config_conflict:
                    for line in problems:
                        log.error("refusing this master's [network] configuration: %s", line)
                self.config_conflict = problems
                continue
            try:
                outcome = await self._append(Allocator.network_command(self.config.network))
            except MasterUnavailable as exc:
                log.info("network configuration not written yet: %s", exc)
                continue
            if outcome.ok:
                log.info("network configuration written to the replicated log")
                continue
            problems = [outcome.error or "refused"]
            if problems != self.config_conflict:
                log.error("the log refused this master's [network] configuration: %s", problems[0])
            self.config_conflict = problems
            await trio.sleep(CONFIG_CHECK_EVERY * 10)

    async def _watch_leader_api(self) -> None:
        """As a follower, check every ``LEADER_API_CHECK`` s that the leader's API answers; while
        it does not, requests here get a 503 instead of a redirect to it."""
        from vxnet.http import HttpClient, HttpError

        tls = self.tls
        http = HttpClient(
            timeout=LEADER_API_CHECK,
            connect_timeout=LEADER_API_CHECK,
            keep_alive=False,
            tls=None if tls is None else (lambda: tls.client),  # per connection: SIGHUP reloads
            server_role=None if tls is None else "master",
        )
        while True:
            await trio.sleep(LEADER_API_CHECK)
            url = None if self.log.is_leader() else self.leader_url()
            if url is None:
                self.leader_api_down = None
                continue
            try:
                answer = await http.request("GET", url + "/overlay-master/leader")
                problem = None if answer.status < 500 else f"HTTP {answer.status}"
            except HttpError as exc:
                problem = exc.reason
            if problem is not None and self.leader_api_down != url:
                log.warning(
                    "the leader's API at %s does not answer (%s): not redirecting", url, problem
                )
            elif problem is None and self.leader_api_down == url:
                log.info("the leader's API at %s answers again", url)
            self.leader_api_down = None if problem is None else url

    # --- operations -----------------------------------------------------------------------------

    def leader_url(self) -> str | None:
        """The coordinator's API (its log host, this master's API port), if known."""
        address = self.log.leader_address()
        if address is None:
            return None
        host = address.rpartition(":")[0]
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://{host}:{self.api_port}"

    def ensure_leading(self) -> None:
        """Return if this master may answer now; raise :class:`MasterUnavailable` otherwise."""
        core = self.log.replica
        if core is None:
            raise MasterUnavailable("the master is starting")
        if not self.log.is_leader():
            leader = self.leader_url()
            if leader is None:
                raise MasterUnavailable(
                    f"no master leads yet (this replica is {core.status.name.lower()})",
                    retry_after=1.0,
                )
            if leader == self.leader_api_down:
                raise MasterUnavailable(
                    f"this master does not lead, and the leader's API at {leader} does not answer",
                    retry_after=1.0,
                )
            raise MasterUnavailable(f"this master does not lead; the leader is {leader}", leader)
        if not core.leading or not self.network_in_log:
            raise MasterUnavailable("the leader is catching up the replicated log", None, 0.2)

    async def register(
        self,
        ip: str,
        networks: Sequence[str] | None,
        *,
        mesos_bridge: bool = True,
        docker_bridge: bool = True,
    ) -> tuple[AgentInfo, bool]:
        """Allocate for agent ``ip``; its AgentInfo, and whether the log was written.

        Raises:
            MasterUnavailable: Not the leader, catching up, or the write's fate is unknown.
            AllocationFailed: The allocation was refused (the message says why).
        """
        problem = agent_address_problem(ip)
        if problem is not None:
            raise AllocationFailed(problem)
        self.ensure_leading()
        if self.allocator.satisfied(ip, networks, mesos_bridge, docker_bridge):
            info = self.allocator.agent_info(ip)
            assert info is not None
            return info, False
        command = Allocator.register_command(ip, networks, mesos_bridge, docker_bridge)
        outcome = await self._append(command)
        if not outcome.ok or outcome.agent is None:
            raise AllocationFailed(outcome.error or "registration refused")
        return outcome.agent, True

    async def delete(self, ips: Sequence[str]) -> Outcome:
        """Free everything the agents ``ips`` hold (through the log)."""
        self.ensure_leading()
        return await self._append(Allocator.delete_command(ips))

    async def _append(self, command: bytes) -> Outcome:
        start = time.perf_counter()
        self._appending += 1
        try:
            position = await self.log.append(command)
        except NotLeader as exc:
            raise MasterUnavailable(str(exc), self.leader_url()) from None
        except AppendUncertain as exc:
            raise MasterUnavailable(
                f"the write may or may not be in the log ({exc}); retry", None, 0.5
            ) from None
        finally:
            self._appending -= 1
        self.append_seconds.append(time.perf_counter() - start)
        if len(self.append_seconds) > 4096:
            del self.append_seconds[:2048]
        outcome = self._outcomes.pop(position, None)
        if outcome is None:  # applied through a snapshot: the state has the answer
            raise MasterUnavailable("the write was compacted before it was read; retry", None, 0)
        return outcome


def _is_network_command(value: bytes) -> bool:
    import msgpack

    try:
        body = msgpack.unpackb(value, raw=False)
    except (ValueError, msgpack.UnpackException):
        return False
    return isinstance(body, dict) and body.get("op") == "network"
