"""The agent's Docker side: a network ``d-<net>`` per virtual network, and Docker task records.

While Docker is enabled (``agent.docker``), the agent talks to the Docker Engine API on its unix
socket (``agent.docker_socket``):

* For every network allocated with a Docker bridge it makes sure Docker has a bridge network of
  the virtual network's name (as DC/OS named it): bridge device ``d-<net>``, no masquerading
  (the agent's egress NAT covers the whole overlay), the overlay MTU, the Docker half of the
  agent's subnet with its first address as gateway, and IPv6 when the network has it. A missing
  network is created; one that differs is removed and created again, unless containers use it
  (then the agent says what differs, once, and leaves it).
* Docker's FORWARD policy may be DROP (dockerd sets it when it finds forwarding off), which
  would drop every forwarded packet Docker's own rules do not accept: the agent keeps
  ``DOCKER-USER`` rules accepting what arrives from the VTEP for ``d-<net>``, and whatever
  enters or leaves ``m-<net>`` (CNI containers to and from other hosts, Docker containers and
  the outside), as a host without Docker forwards it.
* A container connected to a vxnet network becomes a task record (name from the labels
  ``vxnet.task`` and ``vxnet.framework``, else the container's name and framework ``docker``;
  named ports for DNS SRV records from labels ``vxnet.port.<name>=<port>[/udp]``);
  it stops being one when it disconnects, dies or is removed. At the start of every session the
  agent lists the containers, so nothing that happened while it was away is missed.
* Docker not installed or not running: the agent says so once, keeps serving CNI, and looks
  again every few seconds; when Docker appears (or comes back) it starts over.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
from ipaddress import ip_interface
from typing import TYPE_CHECKING, Any

import trio

from vxnet.overlay._docker import Docker, DockerError, DockerUnavailable
from vxnet.records import Port, TaskRecord

if TYPE_CHECKING:
    from vxnet.overlay._containers import Containers
    from vxnet.records import AgentInfo, AgentOverlay

__all__ = ["DockerNetworks", "network_spec", "task_record"]

log = logging.getLogger("vxnet.docker")

RETRY = 5.0
RECHECK = 30.0
IPTABLES_TIMEOUT = 10.0


def network_spec(overlay: AgentOverlay, mtu: int) -> dict[str, Any] | None:
    """The ``POST /networks/create`` body for one AgentInfo overlay entry (None: no Docker
    bridge)."""
    bridge = overlay.docker_bridge
    if not overlay.ok or bridge is None:
        return None
    configs = []
    for address in (bridge.ip, bridge.ip6):
        if address:
            gateway = ip_interface(address)
            configs.append({"Subnet": str(gateway.network), "Gateway": str(gateway.ip)})
    if not configs:
        return None
    return {
        "Name": overlay.name,
        "Driver": "bridge",
        "CheckDuplicate": True,
        "EnableIPv6": bool(bridge.ip6),
        "IPAM": {"Driver": "default", "Config": configs},
        "Options": {
            "com.docker.network.bridge.name": bridge.name,
            "com.docker.network.bridge.enable_ip_masquerade": "false",
            "com.docker.network.driver.mtu": str(mtu if bridge.mtu is None else bridge.mtu),
        },
        "Labels": {"vxnet": "true"},
    }


def differences(spec: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What of ``spec`` the network Docker has (``GET /networks/<name>``) does not match."""
    found: list[str] = []
    if actual.get("Driver") != "bridge":
        found.append(f"driver {actual.get('Driver')!r} instead of 'bridge'")
    options = actual.get("Options") or {}
    for key, value in spec["Options"].items():
        if options.get(key) != value:
            found.append(f"{key}={options.get(key)!r} instead of {value!r}")
    want = sorted((c["Subnet"], c["Gateway"]) for c in spec["IPAM"]["Config"])
    have = sorted(
        (str(c.get("Subnet")), str(c.get("Gateway")))
        for c in (actual.get("IPAM") or {}).get("Config") or []
    )
    if want != have:
        found.append(f"subnets {have} instead of {want}")
    if bool(actual.get("EnableIPv6")) != spec["EnableIPv6"]:
        found.append(f"EnableIPv6 {actual.get('EnableIPv6')} instead of {spec['EnableIPv6']}")
    return found


def task_record(container: dict[str, Any], network: str, agent_ip: str) -> dict[str, Any] | None:
    """The task record of a container (``GET /containers/<id>/json``) on ``network``; None
    when it is not running or not on that network."""
    state = container.get("State") or {}
    attached = ((container.get("NetworkSettings") or {}).get("Networks") or {}).get(network)
    if not state.get("Running") or not attached:
        return None
    labels = (container.get("Config") or {}).get("Labels") or {}
    name = labels.get("vxnet.task") or str(container.get("Name", "")).lstrip("/")
    bindings = (container.get("HostConfig") or {}).get("PortBindings") or {}
    ports = []
    for label, value in sorted(labels.items()):
        if label.startswith("vxnet.port."):  # vxnet.port.<name>=<port>[/udp]
            number, _, protocol = str(value).partition("/")
            if number.isdigit() and 1 <= int(number) <= 65535 and protocol in ("", "tcp", "udp"):
                ports.append(Port(label[11:], int(number), protocol or "tcp"))
    return TaskRecord(
        name=name or str(container["Id"])[:12],
        framework=labels.get("vxnet.framework") or "docker",
        network=network,
        agent_ip=agent_ip,
        runtime="docker",
        ports_mapped=any(bool(v) for v in bindings.values()),
        container_id=str(container["Id"]),
        ip=str(attached["IPAddress"]) if attached.get("IPAddress") else None,
        ip6=str(attached["GlobalIPv6Address"]) if attached.get("GlobalIPv6Address") else None,
        ports=tuple(ports),
    ).to_json()


def _docker_error(exc: BaseException) -> DockerError | None:
    """The Docker error ``exc`` is, or the first of a group holding nothing else; else None."""
    if isinstance(exc, DockerError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(DockerError)
        if rest is None and matched is not None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf if isinstance(leaf, DockerError) else None
    return None


class DockerNetworks:
    """Docker networks and Docker task records of one agent; :meth:`run` until cancelled.

    Args:
        containers: The agent's container bookkeeping (it holds the Docker task records).
        socket_path: Docker's API socket.
        vtep: The VTEP's device name.
        mtu: The overlay MTU, for bridges whose allocation does not carry one.
    """

    def __init__(self, containers: Containers, socket_path: str, vtep: str, mtu: int) -> None:
        self.containers = containers
        self.docker = Docker(socket_path)
        self.vtep = vtep
        self.mtu = mtu
        self.info: AgentInfo | None = None
        self.available = False
        self.errors = 0
        self._changed = trio.Event()
        self._said: set[str] = set()

    def set_info(self, info: AgentInfo) -> None:
        """A (new) allocation: its networks are made sure of at once."""
        self.info = info
        self._changed.set()

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            log.warning("%s", message)

    @property
    def specs(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for overlay in () if self.info is None else self.info.overlays:
            spec = network_spec(overlay, self.mtu)
            if spec is not None:
                out[spec["Name"]] = spec
        return out

    async def run(self) -> None:
        while True:
            try:
                await self.docker.ping()
            except DockerError as exc:
                if self.available:
                    log.warning("Docker went away (%s): serving CNI only until it is back", exc)
                else:
                    self._say(
                        f"Docker is not available ({exc}): serving CNI only; the agent uses "
                        "Docker as soon as it appears"
                    )
                self.available = False
                self._drop_all()
                await trio.sleep(RETRY)
                continue
            if not self.available:
                log.info("Docker answers on %s", self.docker.socket_path)
            self.available = True
            try:
                await self._session()
            except (DockerError, BaseExceptionGroup) as raised:
                error = _docker_error(raised)
                if error is None:
                    raise
                if not isinstance(error, DockerUnavailable):
                    self.errors += 1
                    log.warning("Docker: %s; starting over", error)
                await trio.sleep(1.0)

    def _drop_all(self) -> None:
        for task_id in list(self.containers.docker_tasks):
            self.containers.drop_docker_task(task_id)

    async def _session(self) -> None:
        """Make sure of the networks, sync the task records, then follow Docker's events."""
        start = time.time()  # events from here on are replayed: none is lost during the sync
        await self._ensure_networks()
        await self._sync()
        filters = {"type": ["container", "network"]}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._recheck, nursery.cancel_scope)
            async with contextlib.aclosing(self.docker.events(filters, since=start)) as events:
                async for event in events:
                    await self._on_event(event)

    async def _recheck(self, scope: trio.CancelScope) -> None:
        """Re-make networks when the allocation changes, and every ``RECHECK`` seconds."""
        while True:
            with trio.move_on_after(RECHECK):
                await self._changed.wait()
            self._changed = trio.Event()
            await self._ensure_networks()
            await self._sync()

    async def _ensure_networks(self) -> None:
        for name, spec in self.specs.items():
            actual = await self.docker.network(name)
            if actual is not None:
                problems = differences(spec, actual)
                if not problems:
                    continue
                if actual.get("Containers"):
                    self._say(
                        f"Docker network {name} differs from vxnet's ({'; '.join(problems)}) "
                        "but containers use it: leaving it; remove it to let vxnet recreate it"
                    )
                    continue
                log.warning(
                    "Docker network %s differs (%s): recreating it", name, "; ".join(problems)
                )
                await self.docker.remove_network(str(actual.get("Id") or name))
            await self.docker.create_network(spec)
            log.info(
                "created Docker network %s (bridge %s)",
                name,
                spec["Options"]["com.docker.network.bridge.name"],
            )
        await trio.to_thread.run_sync(self._accept_forwarding)

    def _accept_forwarding(self) -> None:
        """``DOCKER-USER`` rules: overlay traffic into ``d-<net>``, anything through ``m-<net>``."""
        iptables = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
        if iptables is None:
            return
        for spec in self.specs.values():
            bridge = spec["Options"]["com.docker.network.bridge.name"]
            mesos = "m-" + bridge.removeprefix("d-")
            for match in (["-i", self.vtep, "-o", bridge], ["-i", mesos], ["-o", mesos]):
                rule = ["DOCKER-USER", *match, "-j", "ACCEPT"]
                try:
                    check = subprocess.run(
                        [iptables, "-w", "-C", *rule],
                        capture_output=True,
                        timeout=IPTABLES_TIMEOUT,
                        check=False,
                    )
                    if check.returncode == 0:
                        continue
                    if b"No chain" in check.stderr or b"does not exist" in check.stderr:
                        return  # Docker runs without iptables: nothing drops the traffic
                    add = subprocess.run(
                        [iptables, "-w", "-I", *rule],
                        capture_output=True,
                        timeout=IPTABLES_TIMEOUT,
                        check=False,
                    )
                except (OSError, subprocess.TimeoutExpired) as exc:
                    self._say(f"iptables: {exc}")
                    return
                if add.returncode != 0:
                    self._say(
                        f"cannot add iptables rule {' '.join(rule)}: {add.stderr.decode().strip()}"
                    )

    async def _sync(self) -> None:
        """Make the Docker task records those of the running containers on vxnet networks."""
        names = set(self.specs)
        seen: dict[str, dict[str, Any]] = {}
        for summary in await self.docker.containers():
            networks = ((summary.get("NetworkSettings") or {}).get("Networks") or {}).keys()
            for network in names & set(networks):
                container = await self.docker.container(str(summary["Id"]))
                if container is None:
                    continue  # gone meanwhile
                record = self._record(container, network)
                if record is not None:
                    seen[self._task_id(container, network)] = record
        for task_id in set(self.containers.docker_tasks) - set(seen):
            self.containers.drop_docker_task(task_id)
        for task_id, record in seen.items():
            self.containers.put_docker_task(task_id, record)

    def _record(self, container: dict[str, Any], network: str) -> dict[str, Any] | None:
        return task_record(container, network, self.containers.agent_ip)

    @staticmethod
    def _task_id(container: dict[str, Any], network: str) -> str:
        return f"{str(container['Id'])[:12]}-{network}"

    async def _on_event(self, event: dict[str, Any]) -> None:
        kind, action = event.get("Type"), str(event.get("Action", ""))
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        names = set(self.specs)
        if kind == "network":
            network = attributes.get("name")
            if network not in names:
                return
            container_id = attributes.get("container")
            if action == "destroy":
                self._changed.set()  # someone removed our network: make it again
            elif action == "connect" and container_id:
                container = await self.docker.container(str(container_id))
                record = None if container is None else self._record(container, network)
                if container is not None and record is not None:
                    self.containers.put_docker_task(self._task_id(container, network), record)
            elif action == "disconnect" and container_id:
                self.containers.drop_docker_task(f"{str(container_id)[:12]}-{network}")
        elif kind == "container":
            container_id = str((event.get("Actor") or {}).get("ID") or event.get("id") or "")
            if action in ("die", "destroy") and container_id:
                for network in names:
                    self.containers.drop_docker_task(f"{container_id[:12]}-{network}")
            elif action == "start" and container_id:
                container = await self.docker.container(container_id)
                for network in names:
                    record = None if container is None else self._record(container, network)
                    if record is not None and container is not None:
                        self.containers.put_docker_task(self._task_id(container, network), record)
