"""A whole vxnet cluster on one machine: ``vxnet sandbox up|status|exec|kill|start|down``.

The sandbox is a :class:`~vxnet.sandbox.lab.Lab` (hosts ``m1``... for masters, ``a1``... for agents,
in network namespaces on one underlay bridge) running real ``vxnet master`` and ``vxnet agent``
processes with configurations written from the same dataclasses a real deployment loads
(:class:`~vxnet.sandbox.cluster.LabCluster`), a private ``dockerd`` per agent host when Docker is
installed (:class:`~vxnet.sandbox.dockerd.LabDockerd`), and sample containers: on every agent one
CNI container (task ``web``, attached with the conflist the agent wrote) and one Docker container
(task ``db``), all of framework ``marathon``.

It runs secure by default, as a deployment should: a CA of its own in ``pki/`` (a master
certificate per master, an agent certificate per agent, an operator certificate for the
``vxnet`` commands), a master token and the CA's gossip key, so the masters speak TLS 1.3 with
client certificates on their API and log ports, agents register over HTTPS with their
certificate and the token, and gossip is encrypted. ``Spec(tls=False)`` (``--no-tls``) is the
plain mode: no TLS, no token, gossip in clear.

Everything the sandbox is lives under one directory (``/run/vxnet/sandbox``, or
``$VXNET_SANDBOX_DIR``): ``sandbox.json`` (what was built, the processes' PIDs), the hosts'
configurations, logs and state, its PKI, and the Docker daemons' roots. ``sandbox.json`` is
written before anything is built and is the lab's keeper: the lab outlives ``vxnet sandbox
up``, and ``vxnet lab cleanup`` leaves it alone while the file exists. ``vxnet sandbox down``
works from that file and from the lab's slot record alone, so it also removes a sandbox whose
``up`` crashed half-way. Commands that change the sandbox hold ``lock`` (``flock``) in the
directory.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from vxnet.config import DnsSettings, NetworkConfig
from vxnet.pki import CA_CERT, CA_KEY, GOSSIP_KEY
from vxnet.records import AgentInfo, RecordError
from vxnet.sandbox.cluster import (
    MASTER_PORT,
    OPERATOR,
    TOKEN_FILE,
    LabCluster,
    dual_stack_network,
)
from vxnet.sandbox.cni import find_plugin_dir, with_resolv_conf
from vxnet.sandbox.lab import (
    LAB_ROOT,
    Lab,
    LabError,
    list_labs,
    proc_start_time,
    process_alive,
    stop_pids,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from vxnet.sandbox.dockerd import LabDockerd
    from vxnet.sandbox.lab import Host
    from vxnet.sandbox.podman import LabPodman

__all__ = [
    "SandboxError",
    "SandboxInterrupted",
    "Spec",
    "check",
    "down",
    "exec_argv",
    "kill",
    "load_state",
    "log_path",
    "missing_prerequisites",
    "operator_args",
    "sandbox_dir",
    "security",
    "start",
    "status",
    "up",
]

_T = TypeVar("_T")
_R = TypeVar("_R")

STATE_FILE = "sandbox.json"
PKI_DIR = "pki"
OWN_DIRS = (
    "hosts",
    PKI_DIR,
    "docker",
    "podman",
)  # with STATE_FILE and "lock", all it writes in its dir
FRAMEWORK = "marathon"
CNI_TASK = "web"
DOCKER_TASK = "db"
PODMAN_TASK = "api"
RECORD_GRACE = 15
CONVERGE_TIMEOUT = 90.0
DNS_TIMEOUT = 30.0
PING_TIMEOUT = 30.0
PING_WORKERS = 32  # pings at once
MAX_MASTERS = 3
MAX_AGENTS = 20


class SandboxError(Exception):
    """A sandbox command failed; the message says what and what to do."""


class SandboxInterrupted(SandboxError):
    """``up`` was interrupted (Ctrl-C) and removed what it had built."""


def sandbox_dir() -> Path:
    """Where the sandbox lives: ``$VXNET_SANDBOX_DIR`` or ``/run/vxnet/sandbox``."""
    return Path(os.environ.get("VXNET_SANDBOX_DIR") or "/run/vxnet/sandbox")


@dataclass(frozen=True, slots=True)
class Spec:
    """What ``vxnet sandbox up`` builds."""

    masters: int = 1
    agents: int = 3
    ipv6: bool = False
    docker: bool | None = None  # None: when dockerd is installed
    podman: bool = False  # a private podman per agent, with a sample container (--podman)
    tls: bool = True  # TLS, a master token and gossip encryption; False: all plain (--no-tls)

    def check(self) -> None:
        if self.masters not in (1, MAX_MASTERS):
            raise SandboxError(f"--masters must be 1 or 3, not {self.masters}")
        if not 2 <= self.agents <= MAX_AGENTS:
            raise SandboxError(f"--agents must be 2 to {MAX_AGENTS}, not {self.agents}")


# --- prerequisites ------------------------------------------------------------------------------

# command -> the Debian package that provides it
COMMANDS = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "ping": "iputils-ping",
    "dig": "bind9-dnsutils",
    "nft": "nftables",
}
CNI_DIRS = ("/usr/lib/cni", "/opt/cni/bin")


def _which(command: str) -> str | None:
    return shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin:/usr/bin:/bin")


def missing_prerequisites(spec: Spec) -> list[str]:
    """One line per missing prerequisite, naming the package that provides it."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root: the sandbox builds network namespaces (run it with sudo)")
    for command, package in COMMANDS.items():
        if _which(command) is None:
            missing.append(f"{command}: apt-get install {package}")
    if not any((Path(d) / "bridge").is_file() for d in CNI_DIRS):
        missing.append(
            f"the CNI plugins (bridge in {' or '.join(CNI_DIRS)}): "
            "apt-get install containernetworking-plugins"
        )
    if spec.docker:
        if _which("dockerd") is None:
            missing.append("dockerd (asked for by --docker): apt-get install docker.io")
        if _which("iptables") is None:
            missing.append("iptables (for Docker): apt-get install iptables")
        from vxnet.sandbox.dockerd import BUSYBOX

        if not BUSYBOX.is_file():
            missing.append(
                f"{BUSYBOX} (the containers' image is built from it): "
                "apt-get install busybox-static"
            )
    if spec.podman:
        from vxnet.sandbox.podman import podman_available

        if not podman_available():
            missing.append("podman and runc (asked for by --podman): apt-get install podman runc")
    return missing


def docker_wanted(spec: Spec) -> bool:
    """Whether ``up`` runs Docker: as asked, or when dockerd and busybox are installed."""
    if spec.docker is not None:
        return spec.docker
    from vxnet.sandbox.dockerd import BUSYBOX

    return _which("dockerd") is not None and _which("iptables") is not None and BUSYBOX.is_file()


# --- state --------------------------------------------------------------------------------------


def _state_path(base: Path) -> Path:
    return base / STATE_FILE


def load_state(base: Path | None = None) -> dict[str, Any] | None:
    """The sandbox's ``sandbox.json``, or None when there is no sandbox.

    Raises:
        SandboxError: The file is there but unreadable (``down`` still removes the sandbox).
    """
    path = _state_path(sandbox_dir() if base is None else base)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SandboxError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        state = json.loads(text)
        if not isinstance(state, dict) or "hosts" not in state:
            raise ValueError("not a sandbox record")
    except ValueError as exc:
        raise SandboxError(
            f"{path} is damaged ({exc}): `vxnet sandbox down` removes the sandbox"
        ) from exc
    return state


def _save(base: Path, state: dict[str, Any]) -> None:
    path = _state_path(base)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    """Hold the sandbox's lock; another command holding it makes this one wait up to 60 s."""
    base.mkdir(parents=True, exist_ok=True)
    with (base / "lock").open("a") as f:
        deadline = time.monotonic() + 60
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"another vxnet sandbox command holds {base / 'lock'} (waited 60 s)"
                    ) from None
                time.sleep(0.1)
        yield


def _alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and process_alive(pid, start)


# --- progress -----------------------------------------------------------------------------------


class Progress:
    """Progress of ``up`` on ``out``: numbered steps with the elapsed time, counts as they move.

    On a terminal a step's line is rewritten as its count moves; elsewhere each new count is a
    line of its own. ``out`` None: silent.
    """

    def __init__(self, out: IO[str] | None, steps: int) -> None:
        self.out = out
        self.steps = steps
        self.n = 0
        self.started = time.monotonic()
        self.tty = out is not None and out.isatty()
        self.text = ""
        self.shown: tuple[int, str] | None = None  # what the last line said, without the time

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _emit(self, what: str) -> None:
        if self.out is None or self.shown == (self.n, what):
            return
        line = f"[{self.elapsed():5.1f}s] {self.n}/{self.steps} {what}"
        if self.tty:
            self.out.write("\r\x1b[K" + line)
        else:
            self.out.write(line + "\n")
        self.out.flush()
        self.shown = (self.n, what)

    def step(self, text: str) -> None:
        self.finish()
        self.n += 1
        self.text = text
        self._emit(text)

    def count(self, done: int, total: int, what: str) -> None:
        self._emit(f"{self.text}: {done}/{total} {what}")

    def finish(self) -> None:
        """End the current line (on a terminal)."""
        if self.out is not None and self.tty and self.shown is not None:
            self.out.write("\n")
            self.out.flush()
        self.shown = None


def _wait(
    what: str, check: Callable[[], tuple[int, int]], timeout: float, progress: Progress, unit: str
) -> None:
    """Poll ``check`` (done, total) until done == total; show the count as it moves."""
    deadline = time.monotonic() + timeout
    while True:
        done, total = check()
        progress.count(done, total, unit)
        if done >= total:
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"{what}: {done} of {total} {unit} after {timeout:.0f} s")
        time.sleep(0.2)


# --- building -----------------------------------------------------------------------------------


def _cluster(lab: Lab, base: Path, state: dict[str, Any]) -> LabCluster:
    """The :class:`LabCluster` of the sandbox's lab, as ``up`` configured it."""
    spec = state["spec"]
    masters = [lab.host(n) for n, h in state["hosts"].items() if h["role"] == "master"]
    agents = [lab.host(n) for n, h in state["hosts"].items() if h["role"] == "agent"]
    network: NetworkConfig = dual_stack_network() if spec["ipv6"] else NetworkConfig()
    sockets = {
        n: h["docker"]["socket"] for n, h in state["hosts"].items() if h.get("docker") is not None
    }
    return LabCluster(
        lab,
        base / "hosts",
        masters[0],
        agents,
        network=network,
        record_grace=RECORD_GRACE,
        docker_sockets=sockets,
        more_masters=masters[1:],
        dns_on_host=True,
        secure=bool(spec.get("tls", False)),  # a sandbox.json of before TLS: plain
        pki_dir=base / PKI_DIR,
    )


def _suffix() -> str:
    return DnsSettings().suffix


def dns_name(task: str, kind: str = "containerip") -> str:
    return f"{task}.{FRAMEWORK}.{kind}.{_suffix()}"


def _record_process(host: dict[str, Any], proc: subprocess.Popen[bytes] | None) -> None:
    host["pid"] = None if proc is None else proc.pid
    host["start"] = None if proc is None else proc_start_time(proc.pid)


def up(
    spec: Spec, *, progress_out: IO[str] | None = sys.stderr, program: str = "vxnet"
) -> dict[str, Any]:
    """Build and start the sandbox; return its summary (see :func:`summary`).

    Raises:
        SandboxError: A prerequisite is missing, a sandbox exists already, or a step failed
            (then everything built is removed again; the logs are kept and named).
    """
    spec.check()
    missing = missing_prerequisites(spec)
    if missing:
        raise SandboxError("missing prerequisites:\n  " + "\n  ".join(missing))
    use_docker = docker_wanted(spec)
    base = sandbox_dir()
    steps = (9 if use_docker else 8) + (1 if spec.podman else 0)
    progress = Progress(progress_out, steps)
    progress.step("checking prerequisites")
    try:
        with _locked(base):
            existing = load_state(base)
            if existing is not None:
                raise SandboxError(
                    f"a sandbox exists already ({existing.get('phase', '?')}, "
                    f"{len(existing['hosts'])} hosts, in {base}): `vxnet sandbox status` shows it, "
                    "`vxnet sandbox down` removes it"
                )
            for leftover in OWN_DIRS:
                shutil.rmtree(base / leftover, ignore_errors=True)
            names = [f"m{i + 1}" for i in range(spec.masters)]
            names += [f"a{i + 1}" for i in range(spec.agents)]
            state: dict[str, Any] = {
                "version": 1,
                "phase": "building",
                "created": time.time(),
                "spec": {
                    "masters": spec.masters,
                    "agents": spec.agents,
                    "ipv6": spec.ipv6,
                    "docker": use_docker,
                    "podman": spec.podman,
                    "tls": spec.tls,
                },
                "lab": None,
                "hosts": {
                    n: {"role": "master" if n.startswith("m") else "agent", "pid": None}
                    for n in names
                },
                "containers": [],
            }
            _save(base, state)
            try:
                _build(base, state, spec, use_docker, progress)
            except BaseException as exc:
                progress.finish()
                kept = _keep_logs(base)
                with contextlib.suppress(Exception):
                    _teardown(base, state)
                if isinstance(exc, KeyboardInterrupt):
                    raise SandboxInterrupted(
                        f"interrupted; the sandbox was removed again; its logs are in {kept}"
                    ) from exc
                if isinstance(exc, SandboxError | LabError | TimeoutError | OSError):
                    raise SandboxError(
                        f"{exc}\nthe sandbox was removed again; its logs are in {kept}"
                    ) from exc
                raise
            progress.finish()
            state["phase"] = "up"
            state["ready_s"] = round(progress.elapsed(), 1)
            _save(base, state)
    except BaseException:
        _tidy(base)
        raise
    return summary(state, program)


def _build(
    base: Path, state: dict[str, Any], spec: Spec, use_docker: bool, progress: Progress
) -> None:
    names = list(state["hosts"])
    progress.step(f"building {len(names)} hosts (network namespaces on one underlay bridge)")
    lab = Lab(names, keeper=_state_path(base))
    lab.create()
    state["lab"] = {"slot": lab.slot, "prefix": lab.prefix, "subnet": str(lab.subnet)}
    for host in lab.hosts:
        state["hosts"][host.name].update(address=str(host.address), netns=host.netns)
    _save(base, state)
    agents = [h for h in lab.hosts if state["hosts"][h.name]["role"] == "agent"]
    if use_docker:
        progress.step(f"starting a dockerd on each of {len(agents)} agent hosts")
        _start_dockerds(base, state, agents, progress)
    how = "with TLS, a master token and gossip encryption" if spec.tls else "plain (--no-tls)"
    progress.step(
        f"starting {spec.masters} master{'s' if spec.masters > 1 else ''} and "
        f"{spec.agents} agents, {how}"
    )
    cluster = _cluster(lab, base, state)
    cluster.tmp.mkdir(parents=True, exist_ok=True)
    if cluster.secrets is not None:  # made here: the CA, the token, the operator's certificate
        cluster.secrets.operator()
    for host in cluster.masters:
        cluster.start_master(host)
    for host in cluster.agents:
        cluster.start_agent(host)
    for name, proc in cluster.procs.items():
        h = state["hosts"][name]
        _record_process(h, proc)
        h["config"] = str(cluster.config_path(lab.host(name)))
        h["log"] = str(cluster.log_path(lab.host(name)))
    _save(base, state)
    progress.step("waiting for every agent to register and program the overlay")

    def converged() -> tuple[int, int]:
        _check_processes(state)
        done = sum(_each(cluster.converged, cluster.agents))
        return done, len(cluster.agents)

    try:
        _wait("the overlay did not converge", converged, CONVERGE_TIMEOUT, progress, "agents")
    except SandboxError as exc:
        raise SandboxError(f"{exc}\n{cluster.logs(1500)}") from exc
    progress.step("starting sample containers")
    _start_containers(cluster, state, use_docker, progress)
    _save(base, state)
    if spec.podman:
        progress.step(f"starting a podman on each of {len(agents)} agent hosts, with {PODMAN_TASK}")
        _start_podmans(base, cluster, state, progress)
        _save(base, state)
    progress.step("waiting until every name resolves on every agent")
    _wait_dns(cluster, state, progress)
    progress.step("resolving the names inside every container, with no flags")
    _wait_lookups_inside(state, progress)
    progress.step("checking that every container reaches every other")
    pairs = _check_reachability(state, progress)
    state["reachability"] = {"pairs": pairs, "ok": True}


def _each(function: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``function`` of every item, in order, several at once (each runs a process or two)."""
    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(min(len(items), PING_WORKERS)) as pool:
        return list(pool.map(function, items))


def _check_processes(state: dict[str, Any]) -> None:
    for name, h in state["hosts"].items():
        if h.get("pid") is not None and not _alive(h["pid"], h.get("start")):
            tail = ""
            with contextlib.suppress(OSError):
                tail = Path(h["log"]).read_text(errors="replace")[-1500:]
            raise SandboxError(f"{name}'s vxnet {h['role']} exited; the end of its log:\n{tail}")


def _start_dockerds(
    base: Path, state: dict[str, Any], agents: list[Host], progress: Progress
) -> None:
    from vxnet.sandbox.dockerd import LabDockerd

    started: list[LabDockerd] = []

    def one(host: Host) -> LabDockerd:
        # Docker's embedded DNS forwards what it does not know to the agent (the production
        # recipe: "dns" in daemon.json)
        dns = DnsSettings().container_addresses
        return LabDockerd.start(host, base / "docker" / host.name, timeout=60, dns=dns)

    with concurrent.futures.ThreadPoolExecutor(len(agents)) as pool:
        futures = {pool.submit(one, h): h for h in agents}
        errors = []
        for future in concurrent.futures.as_completed(futures):
            host = futures[future]
            try:
                daemon = future.result()
            except Exception as exc:
                errors.append(f"{host.name}: {exc}")
                continue
            started.append(daemon)
            state["hosts"][host.name]["docker"] = {
                "socket": daemon.socket_path,
                **daemon.record(),
            }
            _save(base, state)
            progress.count(len(started), len(agents), "daemons")
    if errors:
        raise SandboxError("starting dockerd: " + "; ".join(errors))


def _docker_client(state: dict[str, Any], host: str) -> Any:
    from vxnet.overlay._docker import Docker

    return Docker(state["hosts"][host]["docker"]["socket"], timeout=30)


def _run_docker_container(state: dict[str, Any], host: str, name: str) -> dict[str, Any]:
    """Start the sample Docker container on ``host`` (once the agent made the network)."""
    import trio

    from vxnet.sandbox.dockerd import IMAGE, ensure_image

    docker = _docker_client(state, host)

    async def go() -> dict[str, Any]:
        with trio.fail_after(60):
            while await docker.network("dcos") is None:  # noqa: ASYNC110 - polling an API
                await trio.sleep(0.1)
        await ensure_image(docker)
        spec = {
            "Image": IMAGE,
            "Cmd": ["sleep", "2147483647"],
            "Labels": {"vxnet.task": DOCKER_TASK, "vxnet.framework": FRAMEWORK},
            "HostConfig": {"NetworkMode": "dcos", "RestartPolicy": {"Name": "no"}},
        }
        cid = await docker.create_container(spec, name)
        await docker.start_container(cid)
        info = await docker.container(cid)
        if info is None:
            raise SandboxError(f"{host}: Docker lost container {name} right after starting it")
        return dict(info)

    try:
        result: dict[str, Any] = trio.run(go)
    except trio.TooSlowError:
        raise SandboxError(f"{host}: the agent made no Docker network dcos in 60 s") from None
    return result


def _start_containers(
    cluster: LabCluster, state: dict[str, Any], use_docker: bool, progress: Progress
) -> None:
    total = len(cluster.agents) * (2 if use_docker else 1)
    for host in cluster.agents:
        attached = cluster.attach(
            host, CNI_TASK, args={"VXNET_TASK": CNI_TASK, "VXNET_FRAMEWORK": FRAMEWORK}
        )
        state["containers"].append(
            {
                "name": f"{host.name}-{CNI_TASK}",
                "host": host.name,
                "kind": "cni",
                "task": CNI_TASK,
                "netns": attached.container.netns,
                "ip": attached.ip,
                "ip6": attached.ip6,
                "resolv_conf": str(attached.resolv_conf),
            }
        )
        progress.count(len(state["containers"]), total, "containers")
    if not use_docker:
        return
    with concurrent.futures.ThreadPoolExecutor(len(cluster.agents)) as pool:
        futures = {
            pool.submit(_run_docker_container, state, h.name, f"{h.name}-{DOCKER_TASK}"): h
            for h in cluster.agents
        }
        for future in concurrent.futures.as_completed(futures):
            host = futures[future]
            info = future.result()
            net = info["NetworkSettings"]["Networks"]["dcos"]
            state["containers"].append(
                {
                    "name": f"{host.name}-{DOCKER_TASK}",
                    "host": host.name,
                    "kind": "docker",
                    "task": DOCKER_TASK,
                    "id": info["Id"],
                    "ip": net.get("IPAddress") or None,
                    "ip6": net.get("GlobalIPv6Address") or None,
                }
            )
            progress.count(len(state["containers"]), total, "containers")
    order = {h.name: i for i, h in enumerate(cluster.agents)}
    state["containers"].sort(key=lambda c: (order[c["host"]], c["kind"]))


def _podman(base: Path, cluster: LabCluster, host: Host) -> LabPodman:
    from vxnet.sandbox.podman import LabPodman

    state_dir = cluster.state_dir(host)
    return LabPodman(
        host,
        base / "podman" / host.name,
        state_dir / "cni",
        [find_plugin_dir(), str(state_dir / "bin")],
        DnsSettings().container_addresses,  # the host's resolver: the agent, as in production
    )


def _adopt_podman(state: dict[str, Any], host: Host) -> LabPodman:
    """The podman ``up`` started on ``host``, from its record."""
    from vxnet.sandbox.podman import LabPodman

    record = state["hosts"][host.name]["podman"]
    podman = LabPodman(host, Path(record["dir"]), Path(record["cni_dir"]), record["plugins"], [])
    podman.holder = None if record.get("holder") is None else int(record["holder"])
    podman.machine_dirs = [Path(d) for d in record.get("machine_dirs", [])]
    return podman


def _start_podmans(
    base: Path, cluster: LabCluster, state: dict[str, Any], progress: Progress
) -> None:
    """A private podman on every agent host, each running the sample container ``aN-api``."""

    def one(host: Host) -> dict[str, Any]:
        podman = _podman(base, cluster, host)
        state["hosts"][host.name]["podman"] = {
            "dir": str(podman.base_dir),
            "cni_dir": str(podman.cni_dir),
            "plugins": podman.plugin_dirs,
        }
        podman.setup()
        state["hosts"][host.name]["podman"].update(
            holder=podman.holder, machine_dirs=[str(d) for d in podman.machine_dirs]
        )
        name = f"{host.name}-{PODMAN_TASK}"
        cid = podman.start(
            name, "dcos", cni_args={"VXNET_TASK": PODMAN_TASK, "VXNET_FRAMEWORK": FRAMEWORK}
        )
        info = podman.inspect(name)
        settings = info.get("NetworkSettings") or {}
        net = settings.get("Networks", {}).get("dcos", {}) if isinstance(settings, dict) else {}
        return {
            "name": name,
            "host": host.name,
            "kind": "podman",
            "task": PODMAN_TASK,
            "id": cid,
            "ip": net.get("IPAddress") or None,
            "ip6": net.get("GlobalIPv6Address") or None,
        }

    started = 0
    with concurrent.futures.ThreadPoolExecutor(len(cluster.agents)) as pool:
        for container in pool.map(one, cluster.agents):
            state["containers"].append(container)
            started += 1
            progress.count(started, len(cluster.agents), "podman containers")
    order = {h.name: i for i, h in enumerate(cluster.agents)}
    kinds = {"cni": 0, "docker": 1, "podman": 2}
    state["containers"].sort(key=lambda c: (order[c["host"]], kinds[c["kind"]]))


def expected_names(state: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(DNS name, record type) -> the addresses it must answer, from the sandbox's containers."""
    want: dict[tuple[str, str], set[str]] = {}
    agents = {n: h["address"] for n, h in state["hosts"].items() if h["role"] == "agent"}
    for c in state["containers"]:
        want.setdefault((dns_name(c["task"]), "A"), set()).add(c["ip"])
        if c.get("ip6"):
            want.setdefault((dns_name(c["task"]), "AAAA"), set()).add(c["ip6"])
        want.setdefault((dns_name(c["task"], "agentip"), "A"), set()).add(agents[c["host"]])
    return want


def resolve(host_netns: str, queries: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
    """Ask the agent in ``host_netns`` (on 127.0.0.1) with ``dig``: (name, type) -> answers."""
    argv = ["nsenter", f"--net=/run/netns/{host_netns}", "--", "dig", "@127.0.0.1"]
    argv += ["+noall", "+answer", "+tries=1", "+time=2"]
    for name, rtype in queries:
        argv += [name, rtype]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
    got: dict[tuple[str, str], set[str]] = {q: set() for q in queries}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[2] == "IN":
            key = (fields[0].rstrip(".").lower(), fields[3])
            if key in got:
                got[key].add(fields[4])
    return got


def _wait_dns(cluster: LabCluster, state: dict[str, Any], progress: Progress) -> None:
    want = expected_names(state)
    hosts = [state["hosts"][h.name]["netns"] for h in cluster.agents]

    def check() -> tuple[int, int]:
        done = 0
        for netns in hosts:
            got = resolve(netns, list(want))
            done += sum(1 for q, addresses in want.items() if got[q] == addresses)
        return done, len(want) * len(hosts)

    _wait("names did not resolve", check, DNS_TIMEOUT, progress, "answers right")


def _netns_of(state: dict[str, Any], container: dict[str, Any]) -> str:
    """The network namespace file of a sandbox container."""
    if container["kind"] == "cni":
        path = f"/run/netns/{container['netns']}"
        if not Path(path).exists():
            raise SandboxError(f"container {container['name']}'s namespace {path} is gone {GONE}")
        return path
    if container["kind"] == "podman":
        lab = _lab(state)
        try:
            found = _adopt_podman(state, lab.host(container["host"])).inspect(container["name"])
        except LabError as exc:
            raise SandboxError(f"{container['host']}'s podman: {exc}") from exc
        state_info = found.get("State")
        pid = int(state_info.get("Pid") or 0) if isinstance(state_info, dict) else 0
        if not pid:
            raise SandboxError(f"podman container {container['name']} is not running")
        return f"/proc/{pid}/ns/net"
    import trio

    from vxnet.overlay._docker import DockerError

    docker = _docker_client(state, container["host"])
    try:
        info = trio.run(docker.container, container["id"])
    except (DockerError, OSError) as exc:
        raise SandboxError(f"{container['host']}'s dockerd does not answer ({exc})") from exc
    pid = 0 if info is None else int(info["State"].get("Pid") or 0)
    if not pid:
        raise SandboxError(f"Docker container {container['name']} is not running")
    return f"/proc/{pid}/ns/net"


Pair = tuple[str, str, str]  # source container, destination container, destination address


def _pairs(state: dict[str, Any]) -> list[Pair]:
    """Every ordered pair of containers, once per address family both have."""
    containers = state["containers"]
    return [
        (src["name"], dst["name"], dst[key])
        for src in containers
        for dst in containers
        if src is not dst
        for key in ("ip", "ip6")
        if src.get(key) and dst.get(key)
    ]


def _ping_all(state: dict[str, Any], pairs: list[Pair], pool: Any) -> list[str | None]:
    """One ping per pair, several at once: None where answered, else what went wrong."""
    paths: dict[str, str | SandboxError] = {}
    for c in state["containers"]:
        try:
            paths[c["name"]] = _netns_of(state, c)
        except SandboxError as exc:
            paths[c["name"]] = exc

    def ping(pair: Pair) -> str | None:
        path = paths[pair[0]]
        if isinstance(path, SandboxError):
            return str(path)
        argv = ["nsenter", f"--net={path}", "--", "ping", "-c", "1", "-W", "2", pair[2]]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return None if out.returncode == 0 else (out.stdout + out.stderr).strip()[-120:]

    return list(pool.map(ping, pairs))


def _lookup_argv(state: dict[str, Any], container: dict[str, Any], name: str) -> list[str]:
    """``busybox nslookup name`` inside ``container`` as its applications ask: a CNI container
    with the ``resolv.conf`` its runtime wrote from the CNI result, a Docker container in its own
    file system (Docker's embedded DNS, forwarding to the agent)."""
    lookup = ["busybox", "nslookup", "-type=a", name]
    if container["kind"] == "cni":
        argv = lookup
        if container.get("resolv_conf"):
            argv = with_resolv_conf(lookup, container["resolv_conf"])
        return ["nsenter", f"--net={_netns_of(state, container)}", "--", *argv]
    pid = _netns_of(state, container).split("/")[2]
    return ["nsenter", "-t", pid, "--net", "--mount", "--", "/bin/busybox", *lookup[1:]]


def _lookups_inside(state: dict[str, Any], pool: Any) -> list[dict[str, Any]]:
    """Every container asks for every task's containerip name; what came back wrong."""
    want = {
        name: addresses
        for (name, rtype), addresses in expected_names(state).items()
        if rtype == "A" and ".containerip." in name
    }
    asks = [(c, name) for c in state["containers"] for name in sorted(want)]

    def ask(pair: tuple[dict[str, Any], str]) -> dict[str, Any] | None:
        container, name = pair
        try:
            argv = _lookup_argv(state, container, name)
        except SandboxError as exc:
            return {"container": container["name"], "name": name, "said": str(exc)}
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        got = set(_nslookup_addresses(out.stdout))
        if got == want[name]:
            return None
        said = (out.stdout + out.stderr).strip().splitlines()
        return {
            "container": container["name"],
            "name": name,
            "answered": sorted(got),
            "expected": sorted(want[name]),
            "said": said[-1] if said else "",
        }

    return [r for r in pool.map(ask, asks) if r is not None]


def _nslookup_addresses(out: str) -> list[str]:
    """The addresses of busybox nslookup's answer (not those of the server it names first)."""
    if "Name:" not in out:
        return []
    answer = out.split("Name:", 1)[1]
    return [
        line.split()[-1]
        for line in answer.splitlines()
        if line.startswith("Address") and line.split()
    ]


def _wait_lookups_inside(state: dict[str, Any], progress: Progress) -> int:
    """Until every container resolves every task's name from inside; how many lookups."""
    total = len(state["containers"]) * len(
        {n for (n, t) in expected_names(state) if t == "A" and ".containerip." in n}
    )
    deadline = time.monotonic() + DNS_TIMEOUT
    with concurrent.futures.ThreadPoolExecutor(PING_WORKERS) as pool:
        while True:
            wrong = _lookups_inside(state, pool)
            progress.count(total - len(wrong), total, "lookups")
            if not wrong:
                return total
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"{len(wrong)} of {total} lookups inside containers went wrong: "
                    + "; ".join(f"{w['container']}: {w['name']}: {w['said']}" for w in wrong[:4])
                )
            time.sleep(0.5)


def _check_reachability(state: dict[str, Any], progress: Progress) -> int:
    """Ping every container from every other (IPv4, and IPv6 where both have it) until every
    pair answers; how many pairs."""
    pairs = _pairs(state)
    pending = list(pairs)
    deadline = time.monotonic() + PING_TIMEOUT
    with concurrent.futures.ThreadPoolExecutor(PING_WORKERS) as pool:
        while pending:
            results = _ping_all(state, pending, pool)
            failed = [
                f"{p[0]} -> {p[1]} ({p[2]}): {said}"
                for p, said in zip(pending, results, strict=True)
                if said is not None
            ]
            pending = [p for p, said in zip(pending, results, strict=True) if said is not None]
            progress.count(len(pairs) - len(pending), len(pairs), "pairs")
            if pending and time.monotonic() > deadline:
                raise SandboxError(
                    f"{len(pending)} of {len(pairs)} container pairs cannot reach each other: "
                    + "; ".join(failed[:6])
                )
            if pending:
                time.sleep(0.5)
    return len(pairs)


def check() -> dict[str, Any]:
    """Look once, now: does every container reach every other, and does every running agent
    answer every name as the sandbox's containers say it should? What failed, as JSON values.

    Raises:
        SandboxError: No sandbox, or it is not up.
    """
    state = _need_state()
    if state.get("phase") != "up":
        raise SandboxError(f"the sandbox is not up ({state.get('phase')})")
    pairs = _pairs(state)
    with concurrent.futures.ThreadPoolExecutor(PING_WORKERS) as pool:
        results = _ping_all(state, pairs, pool)
    unreachable = [
        {"from": p[0], "to": p[1], "address": p[2], "said": said}
        for p, said in zip(pairs, results, strict=True)
        if said is not None
    ]
    want = expected_names(state)
    agents = [
        n
        for n, h in state["hosts"].items()
        if h["role"] == "agent" and _process_state(h) == "running"
    ]
    answers = _each(lambda n: resolve(state["hosts"][n]["netns"], list(want)), agents)
    with concurrent.futures.ThreadPoolExecutor(PING_WORKERS) as pool:
        inside = _lookups_inside(
            state,
            pool,
        )
    wrong = [
        {
            "agent": agent,
            "name": name,
            "type": rtype,
            "answered": sorted(got[(name, rtype)]),
            "expected": sorted(addresses),
        }
        for agent, got in zip(agents, answers, strict=True)
        for (name, rtype), addresses in want.items()
        if got[(name, rtype)] != addresses
    ]
    return {
        "pairs": len(pairs),
        "unreachable": unreachable,
        "agents_asked": agents,
        "names": len(want) * len(agents),
        "wrong_answers": wrong,
        "lookups_inside": len(state["containers"])
        * len({n for (n, t) in want if t == "A" and ".containerip." in n}),
        "wrong_inside": inside,
        "ok": not unreachable and not wrong and not inside,
    }


# --- summary and status -------------------------------------------------------------------------


def _agent_info(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    """``vxnet overlay status --json`` run in the agent's host, or None if it does not answer."""
    host = state["hosts"][name]
    argv = ["nsenter", f"--net=/run/netns/{host['netns']}", "--"]
    argv += [sys.executable, "-m", "vxnet", "overlay", "status", "--json"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    with contextlib.suppress(ValueError):
        return dict(json.loads(out.stdout))
    return None


def _agent_view(state: dict[str, Any], name: str) -> dict[str, Any]:
    """What ``status`` and the summary show of an agent: process, VTEP, subnets, convergence."""
    host = state["hosts"][name]
    view: dict[str, Any] = {
        "name": name,
        "address": host.get("address"),
        "process": _process_state(host),
    }
    status = _agent_info(state, name) if view["process"] == "running" else None
    if status is None:
        view["overlay"] = None
        return view
    overlays = []
    try:
        info = None if status.get("info") is None else AgentInfo.from_json(status["info"], "info")
    except RecordError as exc:
        view["overlay_error"] = str(exc)
        info = None
    if info is not None:
        vxlan = info.vxlan()
        if info.overlays:
            view["vtep_ip"] = None if vxlan is None else vxlan.vtep_ip
            view["vtep_mac"] = None if vxlan is None else vxlan.vtep_mac
        overlays = [
            {
                "network": o.name,
                "subnet": o.subnet,
                "subnet6": o.subnet6,
                "status": o.state.status.value,
            }
            for o in info.overlays
        ]
    objects = status.get("objects", [])
    view["overlay"] = {
        "networks": overlays,
        "remotes": len(status.get("remotes", [])),
        "objects": len(objects),
        "objects_ok": sum(1 for o in objects if o.get("state") == "ok"),
        "docker": (status.get("docker") or {}).get("available"),
    }
    return view


def _process_state(host: dict[str, Any]) -> str:
    if host.get("pid") is None:
        return "stopped"
    return "running" if _alive(host["pid"], host.get("start")) else "dead"


def security(state: dict[str, Any]) -> dict[str, Any]:
    """How the sandbox is secured, and where its CA, keys and token are (JSON values)."""
    if not state["spec"].get("tls", False):
        return {
            "tls": False,
            "token": False,
            "gossip_encryption": False,
            "summary": "off (--no-tls): plain HTTP, no token, gossip in clear",
        }
    pki = sandbox_dir() / PKI_DIR
    return {
        "tls": True,
        "token": True,
        "gossip_encryption": True,
        "summary": f"TLS 1.3 with client certificates (CA {pki / CA_CERT}), master token, "
        "gossip encryption",
        "pki": str(pki),
        "ca": str(pki / CA_CERT),
        "ca_key": str(pki / CA_KEY),
        "operator_cert": str(pki / f"{OPERATOR}.pem"),
        "operator_key": str(pki / f"{OPERATOR}-key.pem"),
        "token_file": str(pki / TOKEN_FILE),
        "gossip_key": str(pki / GOSSIP_KEY),
    }


def operator_args(state: dict[str, Any]) -> list[str]:
    """What a ``vxnet`` command reading the masters needs in this sandbox: the operator's
    ``--ca/--cert/--key`` when it runs TLS, nothing otherwise."""
    secured = security(state)
    if not secured["tls"]:
        return []
    flags = {"--ca": "ca", "--cert": "operator_cert", "--key": "operator_key"}
    return [arg for flag, key in flags.items() for arg in (flag, secured[key])]


def summary(state: dict[str, Any], program: str = "vxnet") -> dict[str, Any]:
    """The sandbox as ``up`` and ``status`` print it (JSON values); ``program``: how the
    commands to try call vxnet."""
    masters = [
        {
            "name": n,
            "address": h.get("address"),
            "api": f"{h.get('address')}:{MASTER_PORT}",
            "process": _process_state(h),
        }
        for n, h in state["hosts"].items()
        if h["role"] == "master"
    ]
    names = [n for n, h in state["hosts"].items() if h["role"] == "agent"]
    agents = _each(lambda n: _agent_view(state, n), names)
    containers = [
        {
            "name": c["name"],
            "host": c["host"],
            "kind": c["kind"],
            "ip": c["ip"],
            "ip6": c.get("ip6"),
            "dns": dns_name(c["task"]),
        }
        for c in state["containers"]
    ]
    first = state["containers"][0] if state["containers"] else None
    far = next((c for c in state["containers"] if first and c["host"] != first["host"]), None)
    agent1 = next((n for n, h in state["hosts"].items() if h["role"] == "agent"), "a1")
    try_these = [f"{program} sandbox exec {agent1} dig @127.0.0.1 +short {dns_name(CNI_TASK)}"]
    if first and far:
        try_these.append(f"{program} sandbox exec {first['name']} ping -c 3 {far['ip']}")
        # as an application would: the container's resolv.conf, the agent at 198.51.100.1
        task = far["task"]
        try_these.append(
            f"{program} sandbox exec {first['name']} busybox nslookup {dns_name(task)}"
        )
    try_these.append(f"{program} sandbox exec {agent1} vxnet members")
    if masters:
        state_argv = ["vxnet", "master", "state", "--api", masters[0]["api"]]
        state_argv += operator_args(state)
        try_these.append(f"{program} sandbox exec {agent1} {' '.join(state_argv)}")
    return {
        "phase": state.get("phase"),
        "dir": str(sandbox_dir()),
        "lab": state.get("lab"),
        "spec": state["spec"],
        "security": security(state),
        "ready_s": state.get("ready_s"),
        "masters": masters,
        "agents": agents,
        "containers": containers,
        "reachability": state.get("reachability"),
        "try": try_these,
    }


def status(program: str = "vxnet") -> dict[str, Any]:
    """The sandbox's current summary.

    Raises:
        SandboxError: There is no sandbox (or its record is damaged).
    """
    state = load_state()
    if state is None:
        raise SandboxError(f"no sandbox is up (nothing in {sandbox_dir()}): `vxnet sandbox up`")
    return summary(state, program)


# --- exec, kill, start --------------------------------------------------------------------------


def _need_state() -> dict[str, Any]:
    state = load_state()
    if state is None:
        raise SandboxError(f"no sandbox is up (nothing in {sandbox_dir()}): `vxnet sandbox up`")
    return state


def _names(state: dict[str, Any]) -> str:
    return ", ".join([*state["hosts"], *(c["name"] for c in state["containers"])])


def exec_argv(name: str, command: Sequence[str]) -> list[str]:
    """The command line that runs ``command`` in the network namespace of host or container
    ``name`` (``vxnet`` as the command runs this vxnet).

    Raises:
        SandboxError: No such host or container, or it is not running.
    """
    state = _need_state()
    resolv: str | None = None
    if name in state["hosts"]:
        netns = state["hosts"][name].get("netns")
        if netns is None:
            raise SandboxError(f"host {name} was not built (the sandbox is {state['phase']})")
        path = f"/run/netns/{netns}"
        if not Path(path).exists():
            raise SandboxError(f"host {name}'s network namespace {path} is gone {GONE}")
    else:
        container = next((c for c in state["containers"] if c["name"] == name), None)
        if container is None:
            raise SandboxError(f"no host or container {name!r} in the sandbox: {_names(state)}")
        path = _netns_of(state, container)
        resolv = container.get("resolv_conf")
    argv = list(command)
    if argv and argv[0] == "vxnet":
        argv = [sys.executable, "-m", "vxnet", *argv[1:]]
    if resolv:
        argv = with_resolv_conf(argv, resolv)  # as its runtime would give it
    return ["nsenter", f"--net={path}", "--", *argv]


def log_path(name: str, *, dockerd: bool = False) -> Path:
    """The log of host ``name``'s vxnet process (or of its dockerd).

    Raises:
        SandboxError: No sandbox, no such host, or that host has no such log (yet).
    """
    state = _need_state()
    host = _process_host(state, name)
    if dockerd:
        record = host.get("docker")
        if record is None:
            raise SandboxError(f"{name} runs no dockerd in this sandbox")
        path = Path(record["base_dir"]) / "dockerd.log"
    else:
        if "log" not in host:
            raise SandboxError(f"{name} was never started (the sandbox is {state['phase']})")
        path = Path(host["log"])
    if not path.is_file():
        raise SandboxError(f"{path} is not there")
    return path


GONE = "(after a reboot?): `vxnet sandbox down`, then `vxnet sandbox up`"


def _lab(state: dict[str, Any]) -> Lab:
    if state.get("lab") is None:
        raise SandboxError("the sandbox has no lab yet (its `up` did not get that far)")
    try:
        return Lab.reopen(int(state["lab"]["slot"]))
    except LabError as exc:
        raise SandboxError(f"the sandbox's lab is gone {GONE} ({exc})") from exc


def _process_host(state: dict[str, Any], name: str) -> dict[str, Any]:
    host = state["hosts"].get(name)
    if host is None:
        processes = ", ".join(state["hosts"])
        raise SandboxError(f"no host {name!r} runs a vxnet process in the sandbox: {processes}")
    return dict(host)


def kill(name: str, *, sig: signal.Signals = signal.SIGKILL) -> str:
    """Send ``sig`` to the vxnet process of host ``name``; a line saying what was done."""
    base = sandbox_dir()
    _need_state()
    with _locked(base):
        state = _need_state()
        host = _process_host(state, name)
        if not _alive(host.get("pid"), host.get("start")):
            raise SandboxError(f"{name}'s vxnet {host['role']} is not running")
        pid = int(host["pid"])
        os.kill(pid, sig)
        deadline = time.monotonic() + 20
        while _alive(pid, host.get("start")) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid, host.get("start")):
            raise SandboxError(f"{name}'s vxnet {host['role']} (PID {pid}) survived {sig.name}")
        state["hosts"][name]["pid"] = None
        state["hosts"][name]["start"] = None
        _save(base, state)
    return f"{name}: vxnet {host['role']} (PID {pid}) stopped by {sig.name}"


def start(name: str) -> str:
    """Start host ``name``'s vxnet process again, with its configuration; a line saying so."""
    base = sandbox_dir()
    _need_state()
    with _locked(base):
        state = _need_state()
        host = _process_host(state, name)
        if _alive(host.get("pid"), host.get("start")):
            raise SandboxError(f"{name}'s vxnet {host['role']} runs already (PID {host['pid']})")
        if "config" not in host:
            raise SandboxError(f"{name} was never started (the sandbox is {state['phase']})")
        lab = _lab(state)
        argv = [sys.executable, "-m", "vxnet", host["role"], "-c", host["config"]]
        with Path(host["log"]).open("ab") as log:
            proc = lab.host(name).spawn(argv, stdout=log, stderr=log)
        _record_process(state["hosts"][name], proc)
        _save(base, state)
    return f"{name}: vxnet {host['role']} started (PID {proc.pid})"


# --- down ---------------------------------------------------------------------------------------


def _keep_logs(base: Path) -> Path:
    """Copy the sandbox's logs out of its directory (before a failed ``up`` removes it)."""
    kept = Path(tempfile.mkdtemp(prefix=f"vxnet-sandbox-logs-{time.strftime('%Y%m%d-%H%M%S')}-"))
    for log in [*(base / "hosts").glob("*.log"), *(base / "docker").glob("*/dockerd.log")]:
        name = log.name if log.parent.name == "hosts" else f"{log.parent.name}-dockerd.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(log, kept / name)
    return kept


def _teardown(base: Path, state: dict[str, Any] | None) -> list[str]:
    """Remove the sandbox: Docker daemons, processes, the lab, the directory; what was done."""
    done: list[str] = []
    problems: list[str] = []
    lab: Lab | None = None
    if state is not None and state.get("lab") is not None:
        with contextlib.suppress(LabError):
            lab = Lab.reopen(int(state["lab"]["slot"]))
    if lab is None:
        # up crashed before it noted the lab, or the record is gone: find it by its keeper
        for info, _names, _path in list_labs(LAB_ROOT):
            if info is not None and info.keeper == str(_state_path(base)):
                lab = Lab.reopen(info.slot)
    if state is not None and lab is not None:
        from vxnet.sandbox.dockerd import LabDockerd

        for name, host in state["hosts"].items():
            if host.get("podman") is None:
                continue
            try:
                _adopt_podman(state, lab.host(name)).stop()
                done.append(f"stopped {name}'s podman and its containers")
            except (LabError, OSError) as exc:
                problems.append(str(exc))
        for name, host in state["hosts"].items():
            record = host.get("docker")
            if record is None:
                continue
            try:
                LabDockerd.adopt(lab.host(name), record).stop(grace=10)
                done.append(f"stopped {name}'s dockerd")
            except (LabError, OSError) as exc:
                problems.append(str(exc))
    if state is not None:
        pids = [
            (int(h["pid"]), h.get("start"))
            for h in state["hosts"].values()
            if h.get("pid") is not None and _alive(h["pid"], h.get("start"))
        ]
        stop_pids([p for p, _ in pids], starts=dict(pids))
        if pids:
            done.append(f"stopped {len(pids)} vxnet processes")
    if lab is not None:
        prefix = lab.prefix
        try:
            lab.close()
            done.append(f"removed lab {prefix} and its namespaces")
        except LabError as exc:
            problems.append(str(exc))
    if problems:
        raise SandboxError("removing the sandbox left: " + "; ".join(problems))
    # Only what the sandbox writes: $VXNET_SANDBOX_DIR may name a directory that holds more.
    removed = False
    for name in OWN_DIRS:
        if (base / name).exists():
            shutil.rmtree(base / name)
            removed = True
    for name in (STATE_FILE, STATE_FILE.replace(".json", ".tmp")):
        if (base / name).exists():
            (base / name).unlink()
            removed = True
    if removed:
        done.append(f"removed the sandbox's files in {base}")
    return done


def down() -> list[str]:
    """Remove the sandbox, whatever state it is in (idempotent); lines saying what was done."""
    base = sandbox_dir()
    if not _kept_labs(base) and not any((base / n).exists() for n in (STATE_FILE, *OWN_DIRS)):
        return []
    with _locked(base):
        try:
            state = load_state(base)
        except SandboxError:
            state = None  # damaged: the lab is found by its keeper
        done = _teardown(base, state)
    _tidy(base)
    return done


def _tidy(base: Path) -> None:
    """Remove the lock and the directories the sandbox made, once no sandbox is in them."""
    if (base / STATE_FILE).exists():
        return
    with contextlib.suppress(OSError):
        (base / "lock").unlink()
        base.rmdir()
    for made in (LAB_ROOT, LAB_ROOT.parent):  # when empty: labs of running tests keep them
        with contextlib.suppress(OSError):
            made.rmdir()


def _kept_labs(base: Path) -> list[int]:
    return [
        info.slot
        for info, _n, _p in list_labs(LAB_ROOT)
        if info is not None and info.keeper == str(_state_path(base))
    ]
