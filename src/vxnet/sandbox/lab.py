"""A lab of hosts in network namespaces, for multi-host tests and the local sandbox.

A :class:`Lab` builds N hosts on one machine. Each host is a network namespace with ``lo`` and an
``eth0`` holding an underlay address from 198.18.0.0/15; the ``eth0`` of every host is a veth whose
peer sits on the bridge ``br0`` of the lab's own switch namespace. Nothing is created in the
machine's own namespace: tearing down the namespaces removes every link with them.

Every lab claims a slot, a /24 of 198.18.0.0/15, by creating ``/run/vxnet/lab/<slot>.json``
exclusively; the file names the lab's prefix (``vxl-<slot>-<6 hex>``, carried by all its
namespaces) and its owner process. Two labs never share addresses or names, and a lab whose owner
died is found and removed by :func:`cleanup` (``vxnet lab cleanup``) without touching the labs of
live test runs. A lab may instead be kept by a file (the sandbox's state file): it then outlives
the process that built it, :func:`cleanup` leaves it alone while that file exists, and
:meth:`Lab.reopen` gives a later process the lab back.

Teardown (:meth:`Lab.close`, run by the context manager whatever the body did) stops every process
in the lab's namespaces by PID (SIGTERM, then SIGKILL after a grace period), deletes the
namespaces and releases the slot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

from vxnet._closing import ClosesOnExit

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "LAB_ROOT",
    "UNDERLAY",
    "Container",
    "Host",
    "Lab",
    "LabError",
    "LabInfo",
    "Namespace",
    "StopsOnExit",
    "cleanup",
    "list_labs",
    "namespace_pids",
    "proc_start_time",
    "process_alive",
    "stop_pids",
]

LAB_ROOT = Path("/run/vxnet/lab")
NETNS_DIR = Path("/run/netns")
UNDERLAY = IPv4Network("198.18.0.0/15")
SLOT_PREFIX = 24
SLOTS = 2 ** (SLOT_PREFIX - UNDERLAY.prefixlen)
MAX_HOSTS = 2 ** (32 - SLOT_PREFIX) - 2
PREFIX_PATTERN = re.compile(r"vxl-(\d+)-([0-9a-f]{6})")
HOST_NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{0,11}")
STOP_GRACE = 5.0
SPAWN_TIMEOUT = 5.0


class LabError(Exception):
    """The lab could not be built, used or torn down; the message says which step and why."""


def _netns() -> Any:
    from pyroute2 import netns

    return netns


def _ns_iproute(name: str) -> Any:
    from pyroute2 import NetNS

    return NetNS(name)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """State letter and start time (clock ticks since boot) of ``pid``, or ``None`` if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields resume after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def proc_start_time(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def process_alive(pid: int, start: int | None) -> bool:
    """Whether ``pid`` runs (a zombie does not) and is the process that started at ``start``."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z" and (start is None or stat[1] == start)


def _netns_inode(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(NETNS_DIR / name)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def namespace_pids(names: Sequence[str]) -> list[int]:
    """PIDs of the processes whose network namespace is one of the named ones."""
    wanted = {ino for name in names if (ino := _netns_inode(name)) is not None}
    if not wanted:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in wanted:
            pids.append(int(entry.name))
    return pids


def stop_pids(
    pids: Sequence[int], grace: float = STOP_GRACE, starts: dict[int, int | None] | None = None
) -> None:
    """SIGTERM each PID, wait up to ``grace`` seconds, then SIGKILL the ones still running.

    ``starts``: each PID's start time as recorded when it was started (default: now), so that
    a PID reused by another process is left alone.
    """
    starts = {pid: proc_start_time(pid) for pid in pids} if starts is None else starts
    for sig in (signal.SIGTERM, signal.SIGKILL):
        running = [pid for pid in pids if process_alive(pid, starts[pid])]
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while running and time.monotonic() < deadline:
            time.sleep(0.02)
            running = [pid for pid in running if process_alive(pid, starts[pid])]
        if not running:
            return


class StopsOnExit(ClosesOnExit):
    """A context manager that gives itself on entry and calls ``stop()`` on exit."""

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class Namespace:
    """A network namespace of a lab, to run commands and processes in."""

    name: str
    netns: str
    _lab: Lab = field(repr=False, compare=False)

    @property
    def netns_path(self) -> str:
        """The namespace file, for ``nsenter --net=...`` and ``setns``."""
        return str(NETNS_DIR / self.netns)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host's network namespace."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host and wait for it (at most ``timeout`` seconds).

        Raises:
            LabError: ``check`` is set and the command failed or timed out.
        """
        try:
            result = subprocess.run(
                self.command(argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{self.name}: {' '.join(argv)!r} ran over {timeout} s") from exc
        if check and result.returncode != 0:
            raise LabError(
                f"{self.name}: {' '.join(argv)!r} exited {result.returncode}: "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-lived process inside the host; the lab stops it at teardown."""
        return self._lab._spawn(self, argv, stdout=stdout, stderr=stderr, env=env, cwd=cwd)

    @contextlib.contextmanager
    def iproute(self) -> Iterator[Any]:
        """A pyroute2 netlink socket bound to this host's namespace."""
        ns = _ns_iproute(self.netns)
        try:
            yield ns
        finally:
            ns.close()


@dataclass(frozen=True, slots=True)
class Host(Namespace):
    """One host of a lab: a network namespace with an underlay address on ``eth0``."""

    address: IPv4Address


@dataclass(frozen=True, slots=True)
class Container(Namespace):
    """A container of a lab host: an empty namespace (``lo`` up) for a CNI plugin to attach."""

    host: Host


@dataclass(frozen=True, slots=True)
class LabInfo:
    """What ``/run/vxnet/lab/<slot>.json`` records about a lab."""

    slot: int
    prefix: str
    subnet: IPv4Network
    owner_pid: int
    owner_start: int | None
    namespaces: tuple[str, ...]
    keeper: str | None = None
    hosts: tuple[tuple[str, str], ...] = ()  # (name, underlay address), in order

    @property
    def owner_alive(self) -> bool:
        return process_alive(self.owner_pid, self.owner_start)

    @property
    def kept(self) -> bool:
        """Whether the lab is in use: its keeper file exists, or else its owner runs."""
        if self.keeper is not None:
            return Path(self.keeper).exists()
        return self.owner_alive

    def to_json(self) -> str:
        return json.dumps(
            {
                "slot": self.slot,
                "prefix": self.prefix,
                "subnet": str(self.subnet),
                "owner_pid": self.owner_pid,
                "owner_start": self.owner_start,
                "namespaces": list(self.namespaces),
                "keeper": self.keeper,
                "hosts": [list(h) for h in self.hosts],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> LabInfo:
        d = json.loads(text)
        return cls(
            slot=int(d["slot"]),
            prefix=str(d["prefix"]),
            subnet=IPv4Network(d["subnet"]),
            owner_pid=int(d["owner_pid"]),
            owner_start=d["owner_start"],
            namespaces=tuple(d["namespaces"]),
            keeper=d.get("keeper"),
            hosts=tuple((str(n), str(a)) for n, a in d.get("hosts", ())),
        )


def _slot_subnet(slot: int) -> IPv4Network:
    base = int(UNDERLAY.network_address) + slot * 2 ** (32 - SLOT_PREFIX)
    return IPv4Network((base, SLOT_PREFIX))


class Lab(ClosesOnExit):
    """N hosts in network namespaces on one underlay bridge; a context manager.

    Args:
        hosts: How many hosts (named h1, h2, ...) or their names (lower-case letters and digits,
            starting with a letter, at most 12 characters).
        mtu: MTU of the underlay links.
        root: Where the lab records its slot (tests may point it elsewhere).
        keeper: A file that keeps the lab while it exists, whether or not this process runs
            (see :func:`cleanup`); the lab's processes then outlive this process too.
    """

    def __init__(
        self,
        hosts: int | Sequence[str] = 2,
        *,
        mtu: int = 1500,
        root: Path = LAB_ROOT,
        keeper: Path | None = None,
    ) -> None:
        names = [f"h{i + 1}" for i in range(hosts)] if isinstance(hosts, int) else list(hosts)
        if not 1 <= len(names) <= MAX_HOSTS:
            raise LabError(f"a lab holds 1 to {MAX_HOSTS} hosts, not {len(names)}")
        for n in names:
            if not HOST_NAME_PATTERN.fullmatch(n) or n == "sw":
                raise LabError(
                    f"bad host name {n!r}: use 1-12 lower-case letters and digits, "
                    "starting with a letter ('sw' is the switch)"
                )
        if len(set(names)) != len(names):
            raise LabError(f"host names repeat: {names}")
        self._names = names
        self._mtu = mtu
        self._root = root
        self._keeper = None if keeper is None else str(keeper)
        self._info: LabInfo | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self.hosts: list[Host] = []

    @classmethod
    def reopen(cls, slot: int, *, root: Path = LAB_ROOT) -> Lab:
        """The lab recorded in slot ``slot``, built earlier by another process.

        Raises:
            LabError: No readable record in that slot.
        """
        lab = cls(1, root=root)
        info = lab._read_info(slot)
        if info is None:
            raise LabError(f"no lab is recorded in {lab._state_file(slot)}")
        lab._info = info
        lab._names = [name for name, _ in info.hosts]
        lab._keeper = info.keeper
        lab.hosts = [
            Host(name=name, netns=f"{info.prefix}-{name}", address=IPv4Address(address), _lab=lab)
            for name, address in info.hosts
        ]
        return lab

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def _created(self) -> LabInfo:
        if self._info is None:
            raise LabError("the lab is not created")
        return self._info

    @property
    def prefix(self) -> str:
        """The name prefix of every namespace of this lab (``vxl-<slot>-<hex>``)."""
        return self._created().prefix

    @property
    def subnet(self) -> IPv4Network:
        """The lab's underlay /24."""
        return self._created().subnet

    @property
    def slot(self) -> int:
        """The lab's slot: its record is ``<root>/<slot>.json``, its underlay the slot-th /24."""
        return self._created().slot

    @property
    def switch_netns(self) -> str:
        return f"{self.prefix}-sw"

    def host(self, name: str) -> Host:
        """The host called ``name``."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"no host {name!r} in this lab (hosts: {', '.join(self._names)})")

    def container(self, host: Host, name: str) -> Container:
        """Create a container namespace ``<prefix>-<host>-<name>`` for ``host`` (``lo`` up).

        Raises:
            LabError: A bad name, one already taken, or the kernel refused.
        """
        self._created()
        if not HOST_NAME_PATTERN.fullmatch(name):
            raise LabError(
                f"bad container name {name!r}: use 1-12 lower-case letters and digits, "
                "starting with a letter"
            )
        container = Container(
            name=f"{host.name}-{name}",
            netns=f"{self.prefix}-{host.name}-{name}",
            _lab=self,
            host=host,
        )
        if _netns_inode(container.netns) is not None:
            raise LabError(f"container {container.name!r} exists already")
        self._record(container.netns)
        try:
            _netns().create(container.netns)
            with container.iproute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        except Exception as exc:
            raise LabError(f"creating container {container.name}: {exc}") from exc
        return container

    def create(self) -> None:
        """Claim a slot and build the switch and the hosts.

        Raises:
            LabError: No free slot, or the kernel refused a step (named in the message).
        """
        info = self._claim_slot()
        self._info = info
        netns = _netns()
        sw = self.switch_netns
        self._record(sw)
        try:
            netns.create(sw)
            with contextlib.closing(_ns_iproute(sw)) as ipr:
                ipr.link("add", ifname="br0", kind="bridge")
                br = ipr.link_lookup(ifname="br0")[0]
                ipr.link("set", index=br, state="up", mtu=self._mtu)
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                for i, name in enumerate(self._names):
                    host = Host(
                        name=name,
                        netns=f"{info.prefix}-{name}",
                        address=info.subnet.network_address + i + 1,
                        _lab=self,
                    )
                    self._record(host.netns, host)
                    netns.create(host.netns)
                    ipr.link(
                        "add",
                        ifname=name,
                        kind="veth",
                        mtu=self._mtu,
                        peer={"ifname": "eth0", "net_ns_fd": host.netns, "mtu": self._mtu},
                    )
                    port = ipr.link_lookup(ifname=name)[0]
                    ipr.link("set", index=port, master=br, state="up")
                    self._configure_host(host)
                    self.hosts.append(host)
        except LabError:
            raise
        except Exception as exc:
            raise LabError(f"building lab {info.prefix}: {exc}") from exc

    def _configure_host(self, host: Host) -> None:
        with host.iproute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=eth0, address=str(host.address), prefixlen=SLOT_PREFIX)
            ipr.link("set", index=eth0, state="up")

    def close(self) -> None:
        """Stop the lab's processes, delete its namespaces and release its slot (idempotent).

        Raises:
            LabError: Something could not be removed (the message lists what).
        """
        if self._info is None:
            return
        info = self._read_info(self._info.slot) or self._info
        procs, self._procs = self._procs, []
        stop_pids([p.pid for p in procs if p.poll() is None])
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1)
        problems = _remove_lab(info, self._state_file(info.slot))
        self._info = None
        self.hosts = []
        if problems:
            raise LabError("lab teardown left: " + "; ".join(problems))

    # --- processes ------------------------------------------------------------------------------

    def _spawn(
        self,
        host: Namespace,
        argv: Sequence[str],
        *,
        stdout: int | IO[Any] | None,
        stderr: int | IO[Any] | None,
        env: dict[str, str] | None,
        cwd: str | None,
    ) -> subprocess.Popen[bytes]:
        self._created()
        proc = subprocess.Popen(
            host.command(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._procs.append(proc)
        # Return only once the process is inside the host: until nsenter has switched namespace,
        # a scan of the host's processes would not find it.
        target = _netns_inode(host.netns)
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while proc.poll() is None:
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{proc.pid}/ns/net")
                if (st.st_dev, st.st_ino) == target:
                    break
            if time.monotonic() > deadline:
                raise LabError(
                    f"{host.name}: {argv[0]!r} did not enter the namespace within {SPAWN_TIMEOUT} s"
                )
            time.sleep(0.001)
        return proc

    # --- the slot file --------------------------------------------------------------------------

    def _state_file(self, slot: int) -> Path:
        return self._root / f"{slot}.json"

    def _read_info(self, slot: int) -> LabInfo | None:
        try:
            return LabInfo.from_json(self._state_file(slot).read_text())
        except (OSError, ValueError, KeyError):
            return None

    def _claim_slot(self) -> LabInfo:
        self._root.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        for slot in range(SLOTS):
            info = LabInfo(
                slot=slot,
                prefix=f"vxl-{slot}-{secrets.token_hex(3)}",
                subnet=_slot_subnet(slot),
                owner_pid=pid,
                owner_start=proc_start_time(pid),
                namespaces=(),
                keeper=self._keeper,
            )
            try:
                fd = os.open(self._state_file(slot), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            except FileNotFoundError:  # the empty root was just removed (sandbox down)
                self._root.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._state_file(slot), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(info.to_json())
                f.flush()
                os.fsync(f.fileno())
            return info
        raise LabError(
            f"all {SLOTS} lab slots in {self._root} are taken; "
            "run `vxnet lab cleanup` to free the ones of dead runs"
        )

    def _record(self, namespace: str, host: Host | None = None) -> None:
        """Note a namespace in the slot file *before* creating it, so a crash cannot orphan it."""
        assert self._info is not None
        self._info = dataclasses.replace(
            self._info,
            namespaces=(*self._info.namespaces, namespace),
            hosts=self._info.hosts
            if host is None
            else (*self._info.hosts, (host.name, str(host.address))),
        )
        path = self._state_file(self._info.slot)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self._info.to_json())
        os.replace(tmp, path)


def _remove_lab(info: LabInfo, state_file: Path | None) -> list[str]:
    """Stop processes in the lab's namespaces, delete them, drop the slot file; return problems."""
    names = sorted(set(info.namespaces) | set(_namespaces_with_prefix(info.prefix)))
    stop_pids(namespace_pids(names))
    problems = []
    left = namespace_pids(names)
    if left:
        problems.append(f"processes {left} would not stop")
    netns = _netns()
    for name in names:
        if _netns_inode(name) is None:
            continue
        try:
            netns.remove(name)
        except Exception as exc:
            problems.append(f"namespace {name}: {exc}")
    if state_file is not None and not problems:
        state_file.unlink(missing_ok=True)
    return problems


def _namespaces_with_prefix(prefix: str) -> list[str]:
    try:
        entries = os.listdir(NETNS_DIR)
    except OSError:
        return []
    return [e for e in entries if e.startswith(prefix + "-")]


def list_labs(root: Path = LAB_ROOT) -> list[tuple[LabInfo | None, list[str], Path | None]]:
    """Every lab on the machine: its slot record (if any), its namespaces and its slot file.

    Namespaces named like a lab's (``vxl-<slot>-<hex>-...``) with no slot file are listed with
    ``None`` as their record: they are leftovers of a run that died while its file was lost.
    """
    labs: list[tuple[LabInfo | None, list[str], Path | None]] = []
    known: set[str] = set()
    if root.is_dir():
        for path in sorted(root.glob("*.json")):
            try:
                info = LabInfo.from_json(path.read_text())
            except (OSError, ValueError, KeyError):
                info = None
            if info is None:
                labs.append((None, [], path))
                continue
            known.add(info.prefix)
            names = sorted(set(info.namespaces) | set(_namespaces_with_prefix(info.prefix)))
            labs.append((info, names, path))
    orphans: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir(NETNS_DIR)):
            m = PREFIX_PATTERN.match(entry)
            if m and m.group(0) not in known:
                orphans.setdefault(m.group(0), []).append(entry)
    labs.extend((None, names, None) for names in orphans.values())
    return labs


def cleanup(*, everything: bool = False, root: Path = LAB_ROOT) -> list[str]:
    """Remove labs no one uses (all labs with ``everything``).

    A lab is in use while its keeper file exists (the sandbox's), or, without a keeper, while
    the process that built it runs.

    Returns:
        One line per lab removed or that could not be removed.
    """
    report = []
    for info, names, path in list_labs(root):
        if info is not None and info.kept and not everything:
            continue
        if info is None:
            if not names and path is not None:
                path.unlink(missing_ok=True)
                report.append(f"removed unreadable slot file {path}")
                continue
            prefix = PREFIX_PATTERN.match(names[0])
            assert prefix is not None
            info = LabInfo(
                int(prefix.group(1)), prefix.group(0), _slot_subnet(0), 0, None, tuple(names)
            )
        problems = _remove_lab(info, path)
        what = f"lab {info.prefix} ({len(names)} namespaces)"
        report.append(
            f"could not remove {what}: {'; '.join(problems)}" if problems else f"removed {what}"
        )
    return report
