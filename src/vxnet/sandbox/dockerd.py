"""A private Docker daemon inside a lab host, for tests and the local sandbox.

:meth:`LabDockerd.start` runs ``dockerd`` in a host's network namespace (``nsenter --net``, through
:meth:`Host.spawn`) with everything of its own: data root, exec root, API socket, pid file, an
empty configuration file (``/etc/docker/daemon.json`` is not read) and a cgroup parent. dockerd
20.10 then starts its own containerd under the exec root, so several hosts run a daemon at once.
There is no ``docker0`` (``--bridge=none``): tests create the networks they need.

Docker's iptables handling stays on, as on a real agent: it works in a namespace, and changes
only the host's namespace. Mind what it does to forwarding. When dockerd finds
``net.ipv4.ip_forward`` off (as in every new namespace) it switches it on *and* sets the policy of
the FORWARD chain to DROP; its own FORWARD rules accept only traffic leaving a Docker bridge,
replies to it, and published ports. Traffic routed from another interface of the host into a
Docker bridge network (from the overlay's VTEP, say) is then dropped, unless a rule in
``DOCKER-USER`` accepts it. When ``ip_forward`` is already on as dockerd starts, or with
``--ip-forward=false``, dockerd leaves the policy at ACCEPT and that traffic passes.

The daemon's mounts (image layers, container ``/dev/shm``, network namespaces) are made in the
machine's mount namespace, and containers live in namespaces and cgroups of their own: so
:meth:`LabDockerd.stop` does not leave the cleanup to the lab. It stops dockerd (SIGTERM, SIGKILL
after a grace period), kills what is left of its containerd, shims and containers, unmounts
whatever is still mounted under its directories, removes its cgroups and its directories. Only the
log, ``<base>/dockerd.log``, stays. dockerd and containerd also make ``/run/docker/plugins`` and
``/run/containerd/s`` (shim sockets) whatever their roots: those are removed when empty, if they
were not there before.

Unix socket paths are limited to 108 bytes, and containerd puts its socket deep in the exec root:
with a long base directory the exec root and the API socket go to ``/run/vxnet-dk/<random>/``.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import trio

from vxnet.overlay._docker import Docker, DockerError
from vxnet.sandbox.lab import LabError, StopsOnExit, proc_start_time, stop_pids

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from vxnet.sandbox.lab import Host

__all__ = ["BUSYBOX", "IMAGE", "LabDockerd", "busybox_rootfs_tar", "ensure_image"]

BUSYBOX = Path("/bin/busybox")
IMAGE = "vxnet-busybox"
APPLETS = (
    "sh",
    "ping",
    "sleep",
    "ip",
    "cat",
    "ls",
    "nc",
    "wget",
    "hostname",
    "ifconfig",
    "nslookup",
)
SHORT_RUN_ROOT = Path("/run/vxnet-dk")
MAX_BASE_LEN = 60  # <base>/exec/containerd/containerd.sock.ttrpc must fit in 107 bytes
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Made by dockerd and containerd whatever their roots (plugins; shim sockets), parents first.
MACHINE_DIRS = tuple(
    map(Path, ("/run/docker", "/run/docker/plugins", "/run/containerd", "/run/containerd/s"))
)
OWN_FILES = ("daemon.json", "dockerd.pid", "key.json")
MNT_DETACH = 2
STOP_GRACE = 15.0  # dockerd stops its containers (--shutdown-timeout=1), then containerd


def _is_static(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF executable has no program interpreter."""
    if elf[:6] != b"\x7fELF\x02\x01":
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    types = (struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum))
    return 3 not in types  # PT_INTERP


def busybox_rootfs_tar() -> bytes:
    """A tar of a minimal root filesystem: the host's static busybox and a few applet links.

    Raises:
        LabError: ``/bin/busybox`` is missing or not statically linked (install busybox-static).
    """
    try:
        binary = BUSYBOX.read_bytes()
    except OSError as exc:
        raise LabError(f"cannot read {BUSYBOX} ({exc.strerror}): install busybox-static") from exc
    if not _is_static(binary):
        raise LabError(f"{BUSYBOX} is not statically linked: install busybox-static")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, target, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("bin", "etc", "proc", "sys", "dev", "root"):
            add(d, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, binary)
        for applet in APPLETS:
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
    return out.getvalue()


async def ensure_image(docker: Docker, name: str = IMAGE) -> None:
    """Import the busybox root filesystem as image ``<name>:latest`` unless it is there."""
    if await docker.image(f"{name}:latest") is None:
        await docker.import_image(busybox_rootfs_tar(), name, "latest")


def _ping(socket_path: str, timeout: float = 2.0) -> bool:
    """Whether the daemon on ``socket_path`` answers ``/_ping`` (blocking: not in a trio task)."""

    async def ping() -> bool:
        try:
            return await Docker(socket_path, timeout=timeout).ping() == "OK"
        except DockerError:
            return False

    return trio.run(ping)


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _mounts_under(roots: list[Path]) -> list[str]:
    """Mount points (this mount namespace) under any of ``roots``, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        for a, b in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
            point = point.replace(a, b)
        if any(Path(point).is_relative_to(root) for root in roots):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def _pids_of(roots: list[Path], cgroup_parent: str) -> list[int]:
    """Processes whose command line names one of ``roots`` or which are in ``cgroup_parent``."""
    marks = [str(root).encode() for root in roots]
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie: its parent reaps it
            cmdline = Path(entry.path, "cmdline").read_bytes()
            cgroups = Path(entry.path, "cgroup").read_text()
        except (OSError, IndexError):
            continue
        if any(m in cmdline for m in marks) or f":/{cgroup_parent}/" in cgroups:
            pids.append(int(entry.name))
    return pids


def _signal_all(
    find: Callable[[], list[int]], signals: Sequence[int] = (signal.SIGTERM, signal.SIGKILL)
) -> list[int]:
    """Send each signal in turn to the processes ``find`` returns until they are gone (2 s each).

    Returns:
        Those still there after the last signal.
    """
    for sig in signals:
        pids = find()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 2.0
        while pids and time.monotonic() < deadline:
            time.sleep(0.02)
            pids = find()
        if not pids:
            return []
    return find()


def _cgroup_dirs(cgroup_parent: str) -> list[Path]:
    """The cgroup directories of ``cgroup_parent`` in every hierarchy, children first."""
    dirs = []
    for top in (CGROUP_ROOT, *CGROUP_ROOT.iterdir()) if CGROUP_ROOT.is_dir() else ():
        parent = top / cgroup_parent
        if parent.is_dir():
            dirs += [Path(d) for d, _, _ in os.walk(parent)]
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


class LabDockerd(StopsOnExit):
    """A ``dockerd`` of its own in a lab host; a context manager that stops it on exit.

    Start one with :meth:`start`, which returns once the daemon answers.
    """

    def __init__(self, host: Host, base_dir: Path) -> None:
        self.host = host
        self.base_dir = base_dir.absolute()
        tag = secrets.token_hex(4)
        short = len(str(self.base_dir)) <= MAX_BASE_LEN
        self.run_dir = self.base_dir if short else SHORT_RUN_ROOT / tag
        self.cgroup_parent = f"vxnet-dk-{tag}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.adopted_pid: tuple[int, int | None] | None = None  # (pid, start) of adopt()
        self.machine_dirs: list[Path] = []  # those of MACHINE_DIRS it made

    def record(self) -> dict[str, Any]:
        """What another process needs to stop this daemon (:meth:`adopt`), as JSON values."""
        pid = None if self.proc is None else self.proc.pid
        return {
            "base_dir": str(self.base_dir),
            "run_dir": str(self.run_dir),
            "cgroup_parent": self.cgroup_parent,
            "machine_dirs": [str(d) for d in self.machine_dirs],
            "pid": pid,
            "start": None if pid is None else proc_start_time(pid),
        }

    @classmethod
    def adopt(cls, host: Host, record: dict[str, Any]) -> Self:
        """The daemon another process started in ``host``, from its :meth:`record`."""
        self = cls(host, Path(record["base_dir"]))
        self.run_dir = Path(record["run_dir"])
        self.cgroup_parent = str(record["cgroup_parent"])
        self.machine_dirs = [Path(d) for d in record["machine_dirs"]]
        if record.get("pid") is not None:
            self.adopted_pid = (int(record["pid"]), record.get("start"))
        return self

    @property
    def data_root(self) -> Path:
        return self.base_dir / "data"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def socket_path(self) -> str:
        """The daemon's API socket."""
        return str(self.run_dir / "docker.sock")

    @property
    def log_path(self) -> Path:
        return self.base_dir / "dockerd.log"

    def docker(self, timeout: float = 10.0) -> Docker:
        """A client of this daemon."""
        return Docker(self.socket_path, timeout=timeout)

    @classmethod
    def start(
        cls,
        host: Host,
        base_dir: Path,
        timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        dns: Sequence[str] = (),
    ) -> Self:
        """Start dockerd in ``host`` with its state under ``base_dir``; return once it answers.

        ``extra_args`` go to dockerd after the lab's own (``--ip-forward=false``, say); ``dns``
        are the containers' nameservers (``"dns"`` in its configuration: on user-defined
        networks, where its embedded DNS forwards to them).

        Blocks (up to ``timeout`` seconds); from trio, run it in a thread.

        Raises:
            LabError: dockerd is not installed, exited, or did not answer in time (the message
                ends with its log).
        """
        binary = shutil.which("dockerd")
        if binary is None:
            raise LabError("dockerd is not installed (Debian package docker.io)")
        self = cls(host, base_dir)
        self.machine_dirs = [d for d in MACHINE_DIRS if not d.exists()]
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "daemon.json"
        # Not /etc/docker/daemon.json, nor /etc/docker/key.json (the daemon's ID key).
        settings: dict[str, object] = {"deprecated-key-path": str(self.base_dir / "key.json")}
        if dns:
            settings["dns"] = list(dns)
        config.write_text(json.dumps(settings))
        argv = [
            binary,
            f"--config-file={config}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.base_dir / 'dockerd.pid'}",
            f"--host=unix://{self.socket_path}",
            f"--cgroup-parent=/{self.cgroup_parent}",
            "--bridge=none",
            "--shutdown-timeout=1",
            "--log-level=warn",
            *extra_args,
        ]
        try:
            with self.log_path.open("ab") as log:
                self.proc = host.spawn(argv, stdout=log, stderr=log)
            deadline = time.monotonic() + timeout
            while not _ping(self.socket_path):
                if self.proc.poll() is not None:
                    raise LabError(f"{host.name}: dockerd exited {self.proc.returncode}")
                if time.monotonic() > deadline:
                    raise LabError(f"{host.name}: dockerd did not answer within {timeout} s")
                time.sleep(0.05)
        except LabError as exc:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            with contextlib.suppress(LabError):
                self.stop()
            raise LabError(f"{exc}; the end of {self.log_path}:\n{tail}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop dockerd and remove everything it left but its log (idempotent).

        Raises:
            LabError: Something could not be removed (the message lists what).
        """
        roots = [self.data_root, self.exec_root]
        # The containers first: dockerd would give each its stop timeout (10 s by default).
        _signal_all(lambda: _pids_of([], self.cgroup_parent), (signal.SIGKILL,))
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        elif self.adopted_pid is not None:
            stop_pids([self.adopted_pid[0]], grace=grace, starts=dict([self.adopted_pid]))
        self.proc = None
        self.adopted_pid = None
        problems = []
        # What a dockerd that did not stop cleanly left: containerd, shims, containers.
        left = _signal_all(lambda: _pids_of(roots, self.cgroup_parent))
        if left:
            problems.append(f"processes {left} would not stop")
        for point in _mounts_under(roots):
            # umount -l, without the umount binary's /run/mount/utab
            if _libc().umount2(point.encode(), MNT_DETACH) != 0:
                problems.append(f"umount {point}: {os.strerror(ctypes.get_errno())}")
        for d in _cgroup_dirs(self.cgroup_parent):
            try:
                d.rmdir()
            except OSError as exc:
                problems.append(f"cgroup {d}: {exc.strerror}")
        if mounted := _mounts_under(roots):
            problems.append(f"still mounted: {', '.join(mounted)}")
        else:
            for d in roots:
                shutil.rmtree(d, ignore_errors=True)
            for path in (Path(self.socket_path), *(self.base_dir / f for f in OWN_FILES)):
                path.unlink(missing_ok=True)
            for d in reversed(self.machine_dirs):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only when empty: another daemon may use it
            if self.run_dir != self.base_dir:
                with contextlib.suppress(OSError):
                    self.run_dir.rmdir()
                with contextlib.suppress(OSError):
                    SHORT_RUN_ROOT.rmdir()  # fails while another daemon uses it
            dirs = [*roots, *([self.run_dir] if self.run_dir != self.base_dir else [])]
            if left_dirs := [str(d) for d in dirs if d.exists()]:
                problems.append(f"directories remain: {', '.join(left_dirs)}")
        if problems:
            raise LabError(f"{self.host.name}: dockerd teardown left: {'; '.join(problems)}")
