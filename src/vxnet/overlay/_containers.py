"""The agent's containers: addresses for ``vxnet-ipam``, task records, and address usage.

* The IPAM socket (``<state_dir>/ipam.sock``, owner root, mode 0600): one JSON request line per
  connection from ``vxnet-ipam`` (:mod:`vxnet.ipam_plugin`), one JSON answer line. ADD leases
  addresses from the agent's :class:`~._ipam.AddressBook` and publishes the container's task
  record; DEL releases them and deletes the record; CHECK verifies the lease.
* Task records: ``tasks/<agent_ip>/<task_id>`` in the replicated store, with the task's name,
  framework, network, container addresses, agent address, runtime (``cni``, ``docker`` or
  ``api``) and whether it maps host ports. The task id is the container id, with ``-<ifname>``
  for an interface other than ``eth0``. A restarted agent publishes them all again from its
  leases, its Docker containers and its API tasks (kept in ``<state_dir>/tasks.json``).
* Usage: ``usage/<agent_ip>`` in the store says, per network, how many addresses of each half
  (``cni``, ``docker``) are allocated and free, so that ``vxnet overlay usage`` shows the whole
  cluster; it is rewritten when a count changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from ipaddress import ip_address, ip_interface
from typing import TYPE_CHECKING, Any

import trio

from vxnet._json import loads_bounded
from vxnet.overlay._ipam import (
    CODE_INTERNAL,
    CODE_INVALID,
    CODE_TRY_AGAIN,
    AddressBook,
    IpamError,
    Lease,
    halves_from_info,
    parse_cni_args,
    task_identity,
)
from vxnet.records import (
    TASK_PREFIX,
    USAGE_PREFIX,
    HalfUsage,
    Port,
    TaskRecord,
    UsageRecord,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from vxnet.gossip import GossipService
    from vxnet.records import AgentInfo

__all__ = [
    "TASK_PREFIX",
    "USAGE_PREFIX",
    "Containers",
    "TaskError",
    "task_from_api",
]

log = logging.getLogger("vxnet.containers")

IPAM_SOCKET = "ipam.sock"
LEASE_FILE = "ipam.json"
TASK_FILE = "tasks.json"
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 10.0
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
IFNAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,15}")
NAME_MAX = 253
CNI_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
CODE_INCOMPATIBLE = 1
CODE_DECODE = 6


class TaskError(ValueError):
    """A task registered through the API is malformed (the message says which field)."""


def task_from_api(body: object, agent_ip: str) -> tuple[str, dict[str, Any]]:
    """The task id and record of a ``POST /v1/tasks`` body.

    Raises:
        TaskError: A missing or bad field.
    """
    if not isinstance(body, dict):
        raise TaskError("the body must be a JSON object")
    unknown = set(body) - {
        "id",
        "name",
        "framework",
        "network",
        "ip",
        "ip6",
        "ports_mapped",
        "ports",
    }
    if unknown:
        raise TaskError(f"unknown fields: {', '.join(sorted(unknown))}")
    task_id = body.get("id")
    if not isinstance(task_id, str) or not ID_PATTERN.fullmatch(task_id):
        raise TaskError(
            "id: 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    for key in ("name", "network"):
        value = body.get(key)
        if not isinstance(value, str) or not 1 <= len(value) <= NAME_MAX or not value.isprintable():
            raise TaskError(f"{key}: a non-empty string of at most {NAME_MAX} characters")
    framework = body.get("framework", "api")
    if not isinstance(framework, str) or not 1 <= len(framework) <= NAME_MAX:
        raise TaskError(f"framework: a non-empty string of at most {NAME_MAX} characters")
    addresses: dict[str, str] = {}
    for key, version in (("ip", 4), ("ip6", 6)):
        value = body.get(key)
        if value is None:
            continue
        try:
            address = ip_address(value) if isinstance(value, str) else None
        except ValueError:
            address = None
        if address is None or address.version != version:
            raise TaskError(f"{key}: an IPv{version} address, got {value!r}")
        addresses[key] = str(address)
    if not addresses:
        raise TaskError("give the task's address: ip and/or ip6")
    record = TaskRecord(
        name=body["name"],
        framework=framework,
        network=body["network"],
        agent_ip=agent_ip,
        runtime="api",
        ports_mapped=bool(body.get("ports_mapped", False)),
        container_id=task_id,
        ip=addresses.get("ip"),
        ip6=addresses.get("ip6"),
        ports=check_ports(body["ports"]) if "ports" in body else (),
    )
    return task_id, record.to_json()


def check_ports(ports: object) -> tuple[Port, ...]:
    """Named ports as task records carry them (for DNS SRV records).

    Raises:
        TaskError: Not a list of ``{"name", "port", "protocol"?}`` with a port 1-65535 and a
            protocol tcp or udp.
    """
    if not isinstance(ports, list):
        raise TaskError('ports: a list of {"name", "port", "protocol"}')
    out = []
    for i, port in enumerate(ports):
        if not isinstance(port, dict) or set(port) - {"name", "port", "protocol"}:
            raise TaskError(f'ports[{i}]: an object with "name", "port" and "protocol"')
        name, number = port.get("name"), port.get("port")
        protocol = port.get("protocol", "tcp")
        if not isinstance(name, str) or not 1 <= len(name) <= 63:
            raise TaskError(f"ports[{i}].name: a name of 1 to 63 characters")
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            raise TaskError(f"ports[{i}].port: a port number 1-65535")
        if protocol not in ("tcp", "udp"):
            raise TaskError(f"ports[{i}].protocol: tcp or udp")
        out.append(Port(name, number, protocol))
    return tuple(out)


class Containers:
    """One agent's container addresses and task records.

    Args:
        gossip: The agent's gossip node (its store).
        agent_ip: This agent's underlay address.
        state_dir: Where the lease file, API tasks and the IPAM socket live.
        dns: The CNI ``dns`` of an ADD's result (the agent's DNS for its containers).
    """

    def __init__(
        self,
        gossip: GossipService,
        agent_ip: str,
        state_dir: Path,
        dns: dict[str, Any] | None = None,
    ) -> None:
        self.gossip = gossip
        self.dns = dict(dns or {})
        self.agent_ip = agent_ip
        self.state_dir = state_dir
        self.socket_path = state_dir / IPAM_SOCKET
        self.book = AddressBook(state_dir / LEASE_FILE)
        self.api_tasks: dict[str, dict[str, Any]] = self._load_api_tasks()
        self.docker_tasks: dict[
            str, dict[str, Any]
        ] = {}  # task id -> record (by the Docker watcher)
        self.docker_sizes: dict[str, int] = {}  # network -> addresses in its Docker half
        self.requests: dict[str, int] = {}  # "ADD ok", "ADD error 11", ... for /metrics
        self._published_usage: dict[str, Any] | None = None
        self._pending: list[Callable[[], object]] = []

    # --- allocation -----------------------------------------------------------------------------

    def set_info(self, info: AgentInfo) -> None:
        """Take a (new) allocation: its CNI halves and the sizes of its Docker halves."""
        self.book.set_halves(halves_from_info(info))
        sizes: dict[str, int] = {}
        for overlay in info.usable():
            bridge = overlay.docker_bridge
            if bridge is not None and bridge.ip:
                network = ip_interface(bridge.ip).network
                sizes[overlay.name] = network.num_addresses - 3
        self.docker_sizes = sizes
        self.publish_usage()

    def publish_all(self) -> None:
        """Publish every task record this agent holds (after a start) and its usage."""
        for lease in self.book.leases():
            self.gossip.put(self._key(self._task_id(lease)), self._lease_record(lease))
        for task_id, record in self.api_tasks.items():
            self.gossip.put(self._key(task_id), record)
        self.publish_usage()

    # --- the IPAM socket ------------------------------------------------------------------------

    async def serve_ipam(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve ``vxnet-ipam`` on the unix socket until cancelled.

        Raises:
            OSError: The socket cannot be created.
        """
        path = self.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(128)
        listener = trio.SocketListener(sock)
        task_status.started()
        try:
            await trio.serve_listeners(self._connection, [listener])
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                data = b""
                with trio.move_on_after(REQUEST_TIMEOUT):
                    while not data.endswith(b"\n") and len(data) <= MAX_REQUEST:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        data += chunk
                status, text = self.handle(data)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(f"{status}{text}".encode())
        finally:
            # after the answer and the close the plugin waits for: the lease is on disk already
            self.publish_pending()

    def publish_pending(self) -> None:
        """Write the store records of the requests answered since the last call."""
        pending, self._pending = self._pending, []
        for action in pending:
            action()
        if pending:
            self.publish_usage()

    def handle(self, data: bytes) -> tuple[int, str]:
        """Answer one request of ``vxnet-ipam``: its exit status and what it prints.

        The request is a JSON array: command, container id, interface name, CNI_ARGS and the
        network configuration's text (see :mod:`vxnet.ipam_plugin`).
        """
        command = "?"
        version = "1.0.0"
        try:
            try:
                command, container_id, ifname, cni_args, conf_text = loads_bounded(data)
            except (ValueError, TypeError) as exc:
                raise IpamError(CODE_INVALID, "malformed request", str(exc)) from exc
            try:
                conf = loads_bounded(conf_text)
            except (ValueError, TypeError) as exc:
                raise IpamError(
                    CODE_DECODE, "the network configuration is not JSON", str(exc)
                ) from exc
            if not isinstance(conf, dict):
                raise IpamError(CODE_INVALID, "the network configuration is not a JSON object")
            version = str(conf.get("cniVersion", "1.0.0"))
            if version not in CNI_VERSIONS:
                raise IpamError(
                    CODE_INCOMPATIBLE,
                    f"CNI version {version} is not supported",
                    f"supported: {', '.join(CNI_VERSIONS)}",
                )
            runtime_args = conf.get("args")
            answer = self._handle(
                {
                    "command": command,
                    "network": conf.get("name"),
                    "container_id": container_id,
                    "ifname": ifname,
                    "cni_args": cni_args,
                    "runtime_args": runtime_args if isinstance(runtime_args, dict) else None,
                }
            )
        except IpamError as exc:
            self._count(f"{command} error {exc.code}")
            error: dict[str, Any] = {"cniVersion": version, "code": exc.code, "msg": exc.msg}
            if exc.details:
                error["details"] = exc.details
            return 1, json.dumps(error) + "\n"
        except Exception as exc:  # a bug must not take the agent down: answer and log it
            log.exception("IPAM request failed")
            self._count(f"{command} error {CODE_INTERNAL}")
            error = {"cniVersion": version, "code": CODE_INTERNAL, "msg": f"internal error: {exc}"}
            return 1, json.dumps(error) + "\n"
        self._count(f"{command} ok")
        if command != "ADD":
            return 0, ""
        ips = []
        for ip in answer["ips"]:
            entry = {"address": ip["address"], "gateway": ip["gateway"]}
            if version != "1.0.0":
                entry["version"] = "6" if ":" in ip["address"] else "4"
            ips.append(entry)
        result = {"cniVersion": version, "ips": ips, "routes": answer["routes"], "dns": self.dns}
        return 0, json.dumps(result) + "\n"

    def _count(self, what: str) -> None:
        self.requests[what] = self.requests.get(what, 0) + 1

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        network = request.get("network")
        container_id = request.get("container_id")
        ifname = request.get("ifname")
        if not isinstance(network, str) or not network:
            raise IpamError(CODE_INVALID, "the network configuration has no name")
        if not isinstance(container_id, str) or not ID_PATTERN.fullmatch(container_id):
            raise IpamError(
                CODE_INVALID,
                f"bad container id {str(container_id)[:80]!r}",
                "1-128 letters, digits, '_', '.' or '-'",
            )
        if not isinstance(ifname, str) or not IFNAME_PATTERN.fullmatch(ifname):
            raise IpamError(CODE_INVALID, f"bad interface name {str(ifname)[:80]!r}")
        if command == "DEL":
            lease = self.book.delete(network, container_id, ifname, time.time())
            if lease is not None:
                key = self._key(self._task_id(lease))
                self._pending.append(lambda: self.gossip.delete(key))
            return {"ok": True}
        if not self.book.halves:
            raise IpamError(
                CODE_TRY_AGAIN,
                "this agent has no allocation yet (no master has answered)",
                f"agent {self.agent_ip}",
            )
        if command == "CHECK":
            self.book.check(network, container_id, ifname)
            return {"ok": True}
        if command != "ADD":
            raise IpamError(CODE_INVALID, f"unknown command {command!r}")
        cni_args = parse_cni_args(str(request.get("cni_args") or ""))
        runtime_args = request.get("runtime_args")
        task = task_identity(
            container_id, cni_args, runtime_args if isinstance(runtime_args, dict) else None
        )
        try:
            requested = [a for a in cni_args.get("IP", "").split(",") if a.strip()]
            lease = self.book.add(network, container_id, ifname, task, time.time(), requested)
        except IpamError as exc:
            if exc.code == CODE_TRY_AGAIN:
                exc.details = f"agent {self.agent_ip}: {exc.details}"
            raise
        key, record = self._key(self._task_id(lease)), self._lease_record(lease)
        self._pending.append(lambda: self.gossip.put(key, record))
        half = self.book.halves[network]
        ips = []
        routes = []
        if lease.ip is not None:
            ips.append({"address": lease.ip, "gateway": half.gateway})
            routes.append({"dst": "0.0.0.0/0"})
        if lease.ip6 is not None:
            ips.append({"address": lease.ip6, "gateway": half.gateway6})
            routes.append({"dst": "::/0"})
        return {"ok": True, "ips": ips, "routes": routes}

    # --- records --------------------------------------------------------------------------------

    def _key(self, task_id: str) -> str:
        return TaskRecord.key_of(self.agent_ip, task_id)

    @staticmethod
    def _task_id(lease: Lease) -> str:
        return (
            lease.container_id if lease.ifname == "eth0" else f"{lease.container_id}-{lease.ifname}"
        )

    def _lease_record(self, lease: Lease) -> dict[str, Any]:
        return TaskRecord(
            name=str(lease.task.get("name") or lease.container_id),
            framework=str(lease.task.get("framework") or "cni"),
            network=lease.network,
            agent_ip=self.agent_ip,
            runtime="cni",
            ports_mapped=bool(lease.task.get("ports_mapped", False)),
            container_id=lease.container_id,
            ip=None if lease.ip is None else lease.ip.split("/")[0],
            ip6=None if lease.ip6 is None else lease.ip6.split("/")[0],
        ).to_json()

    def put_docker_task(self, task_id: str, record: dict[str, Any]) -> None:
        """Publish (or update) the record of a Docker container."""
        if self.docker_tasks.get(task_id) != record:
            self.docker_tasks[task_id] = record
            self.gossip.put(self._key(task_id), record)
            self.publish_usage()

    def drop_docker_task(self, task_id: str) -> None:
        """Delete the record of a Docker container that stopped or left the network."""
        if self.docker_tasks.pop(task_id, None) is not None:
            self.gossip.delete(self._key(task_id))
            self.publish_usage()

    def put_api_task(self, task_id: str, record: dict[str, Any]) -> None:
        """Register a task through the API (kept on disk, published).

        Raises:
            OSError: The task file cannot be written (nothing published).
        """
        tasks = {**self.api_tasks, task_id: record}
        self._save_api_tasks(tasks)
        self.api_tasks = tasks
        self.gossip.put(self._key(task_id), record)

    def drop_api_task(self, task_id: str) -> bool:
        """Deregister an API task; False if there was none.

        Raises:
            OSError: The task file cannot be written (nothing changed).
        """
        if task_id not in self.api_tasks:
            return False
        tasks = {k: v for k, v in self.api_tasks.items() if k != task_id}
        self._save_api_tasks(tasks)
        self.api_tasks = tasks
        self.gossip.delete(self._key(task_id))
        return True

    def _load_api_tasks(self) -> dict[str, dict[str, Any]]:
        path = self.state_dir / TASK_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise IpamError(CODE_INTERNAL, f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise IpamError(CODE_INTERNAL, f"{path} is not a JSON object of tasks")
        return {str(k): dict(v) for k, v in data.items()}

    def _save_api_tasks(self, tasks: dict[str, dict[str, Any]]) -> None:
        path = self.state_dir / TASK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as f:
            json.dump(tasks, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    # --- usage ----------------------------------------------------------------------------------

    def usage(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per network: ``cni`` (from the lease book) and ``docker`` (containers on ``d-<net>``)
        allocated and free counts."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for network in sorted(self.book.halves):
            out[network] = {"cni": self.book.usage(network)}
        for network, size in sorted(self.docker_sizes.items()):
            used = sum(1 for r in self.docker_tasks.values() if r.get("network") == network)
            out.setdefault(network, {})["docker"] = {
                "total": size,
                "allocated": used,
                "free": max(size - used, 0),
            }
        return out

    def publish_usage(self) -> None:
        usage = self.usage()
        if usage != self._published_usage:
            record = UsageRecord(
                {
                    network: {half: HalfUsage(**counts) for half, counts in halves.items()}
                    for network, halves in usage.items()
                }
            )
            self.gossip.put(f"{USAGE_PREFIX}{self.agent_ip}", record.to_json())
            self._published_usage = usage
