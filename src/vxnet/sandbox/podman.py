"""A private rootful podman in a lab host, as a CNI runtime of an agent's conflists.

:class:`LabPodman` runs Debian's podman 4.3 (CNI backend) inside a lab host's network namespace
with nothing of the machine's own podman state: its ``containers.conf`` and ``storage.conf``
(vfs) live under the podman's own directory, and every ``podman`` command (and so conmon and
the containers) runs in one mount namespace of the podman's own, held open by a ``sleep``
process, in which that directory's files stand in for the machine's ``/etc/resolv.conf`` (the
host's resolver: the agent's DNS, as in production), ``/var/lib/cni`` (libcni's result cache)
and ``/var/lib/containers`` (the image cache). The containers' network namespaces, which
podman mounts under ``/run/netns``, are mounted there too, not in the machine's. Its network
configurations are the agent's own conflist directory, its plugins Debian's and ``vxnet-ipam``.

Machine facts it works around (REFERENCE.md): crun fails on this machine's cgroup layout, so
the runtime is runc; podman's default ``nofile``/``nproc`` limits fail without
CAP_SYS_RESOURCE, so ``default_ulimits`` are set; the image is imported offline from a root
filesystem of Debian's busybox-static (:func:`~.dockerd.busybox_rootfs_tar`).

:meth:`LabPodman.stop` removes every container, stops what is left of its processes by PID
(conmon and the containers' own, found by the podman's directory in their command lines or
cgroups) and removes its directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vxnet.sandbox.lab import LabError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from vxnet.sandbox.lab import Host

__all__ = ["IMAGE", "LabPodman", "podman_available"]

IMAGE = "localhost/vxnet-busybox"
SHORT_RUN_ROOT = Path("/run/vxnet-pm")
STOP_GRACE = 5.0

HOLDER_TIMEOUT = 10.0
# where the podman's own directories are bind-mounted (made empty when missing, removed after)
MACHINE_DIRS = (Path("/var/lib/cni"), Path("/var/lib/containers"))
# mount --bind each file or directory "$1" "$2", ... onto its target, then run the rest
_BIND = (
    'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'
)


def podman_available() -> bool:
    """Whether podman and runc are installed."""
    return shutil.which("podman") is not None and shutil.which("runc") is not None


class LabPodman:
    """podman in ``host``, its state under ``base_dir``, its networks the conflists in
    ``cni_dir``.

    Args:
        host: The lab host (an agent's).
        base_dir: The podman's own directory (created; removed by :meth:`stop`).
        cni_dir: The agent's conflist directory (``agent.cni_dir``).
        plugin_dirs: Where the CNI plugins are (Debian's, and the agent's ``cni_bin_dir``).
        nameservers: The host's resolver (the agent's DNS container addresses).
    """

    def __init__(
        self,
        host: Host,
        base_dir: Path,
        cni_dir: Path,
        plugin_dirs: Sequence[str],
        nameservers: Sequence[str],
    ) -> None:
        self.host = host
        self.base_dir = base_dir.absolute()
        self.cni_dir = cni_dir
        self.plugin_dirs = list(plugin_dirs)
        self.nameservers = list(nameservers)
        self.holder: int | None = None  # the PID holding the mount namespace
        # the bind mounts' targets this podman made on the machine (removed by stop)
        self.machine_dirs: list[Path] = []

    # --- files ----------------------------------------------------------------------------------

    @property
    def cgroup_parent(self) -> str:
        """The cgroup its containers run under (one of the lab host's own)."""
        return f"vxnet-podman-{self.host.netns}"

    @property
    def root(self) -> Path:
        return self.base_dir / "storage"

    @property
    def runroot(self) -> Path:
        """Its run directory: podman refuses one longer than 50 characters, so a short one of
        the lab host's own (removed by :meth:`stop`)."""
        return SHORT_RUN_ROOT / self.host.netns

    def setup(self) -> LabPodman:
        """Write the configuration files and import the image (once); ``self``.

        Raises:
            LabError: podman is missing, or the image could not be imported (what was made is
                removed again).
        """
        if not podman_available():
            raise LabError("podman is not installed (Debian packages podman and runc)")
        try:
            self._setup()
        except BaseException:
            with contextlib.suppress(LabError):
                self.stop()
            raise
        return self

    def _setup(self) -> None:
        d = self.base_dir
        self.runroot.mkdir(parents=True, exist_ok=True)
        for target in MACHINE_DIRS:
            try:
                target.mkdir(parents=True)
            except FileExistsError:
                continue  # the machine's, or another lab podman's (which removes it)
            self.machine_dirs.append(target)
        for sub in ("storage", "tmp", "cni-cache", "containers-cache", "volumes"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        dirs = ", ".join(f'"{p}"' for p in self.plugin_dirs)
        (d / "containers.conf").write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f'network_config_dir = "{self.cni_dir}"\n'
            f"cni_plugin_dirs = [{dirs}]\n"
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{d}/events.log"\n'
            f'tmp_dir = "{d / "tmp"}"\n'
            f'static_dir = "{d}/storage/libpod"\n'
            f'volume_path = "{d}/volumes"\n'
        )
        (d / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n'
        )
        (d / "resolv.conf").write_text("".join(f"nameserver {a}\n" for a in self.nameservers))
        self._hold()
        if self.run(["image", "exists", IMAGE], check=False).returncode != 0:
            from vxnet.sandbox.dockerd import busybox_rootfs_tar

            tar = d / "rootfs.tar"
            tar.write_bytes(busybox_rootfs_tar())
            self.run(["import", str(tar), IMAGE], timeout=120)
            tar.unlink()

    # --- commands -------------------------------------------------------------------------------

    def _hold(self) -> None:
        """Start the process that holds the podman's mount namespace, once it is set up."""
        if self.holder is not None and _alive(self.holder):
            return
        d = self.base_dir
        binds = [
            (d / "resolv.conf", "/etc/resolv.conf"),
            (d / "cni-cache", "/var/lib/cni"),
            (d / "containers-cache", "/var/lib/containers"),
        ]
        pairs = [str(x) for pair in binds for x in pair]
        hold = ["sh", "-c", _BIND, "sh", *pairs, "--", "sleep", "2147483647"]
        argv = ["unshare", "--mount", "--propagation", "private", "--", *hold]
        proc = self.host.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + HOLDER_TIMEOUT
        # ready once sh has made the mounts and become sleep
        while _comm(proc.pid) != "sleep":
            if proc.poll() is not None:
                raise LabError(f"{self.host.name}: the podman's mount namespace could not be made")
            if time.monotonic() > deadline:
                proc.kill()
                raise LabError(f"{self.host.name}: the podman's mount namespace took too long")
            time.sleep(0.01)
        self.holder = proc.pid

    def argv(self, args: Sequence[str]) -> list[str]:
        """The command line of ``podman args`` in the podman's mount namespace (for
        :meth:`Host.run <vxnet.sandbox.lab.Host.run>`, in the host's network namespace)."""
        if self.holder is None:
            raise LabError(f"{self.host.name}: the podman is not set up")
        podman = ["podman", "--root", str(self.root), "--runroot", str(self.runroot), *args]
        return ["nsenter", "-t", str(self.holder), "--mount", "--", *podman]

    def env(self, cni_args: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a podman command (``CNI_ARGS`` is passed on to the plugins)."""
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = str(self.base_dir / "containers.conf")
        env["CONTAINERS_STORAGE_CONF"] = str(self.base_dir / "storage.conf")
        env.pop("CNI_ARGS", None)
        if cni_args:
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in cni_args.items())
        return env

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        cni_args: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman args`` and wait (at most ``timeout`` seconds).

        Raises:
            LabError: ``check`` is set and podman failed or ran over the timeout.
        """
        return self.host.run(self.argv(args), check=check, timeout=timeout, env=self.env(cni_args))

    def start(
        self,
        name: str,
        network: str,
        command: Sequence[str] = ("sleep", "2147483647"),
        *,
        ip: str | None = None,
        cni_args: Mapping[str, str] | None = None,
    ) -> str:
        """Start container ``name`` (detached) on ``network``, at ``ip`` if given; its id.

        Raises:
            LabError: podman refused (the message is podman's, with the CNI plugin's error).
        """
        args = ["run", "--detach", "--name", name, "--network", network]
        args += [f"--cgroup-parent=/{self.cgroup_parent}"]
        if ip is not None:
            args += ["--ip", ip]
        out = self.run([*args, IMAGE, *command], cni_args=cni_args, timeout=120)
        return out.stdout.strip().splitlines()[-1]

    def inspect(self, name: str) -> dict[str, object]:
        """``podman inspect`` of one container."""
        import json

        data = json.loads(self.run(["inspect", name]).stdout)
        return dict(data[0])

    def address(self, name: str, network: str) -> str | None:
        """The IPv4 address container ``name`` has on ``network``."""
        settings = self.inspect(name).get("NetworkSettings") or {}
        networks = settings.get("Networks") if isinstance(settings, dict) else None
        entry = networks.get(network) if isinstance(networks, dict) else None
        address = entry.get("IPAddress") if isinstance(entry, dict) else None
        return str(address) if address else None

    # --- stopping -------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """This podman's processes still running (conmon, the containers'), by PID."""
        mark, group = str(self.base_dir).encode(), self.cgroup_parent.encode()
        holder = {self.holder} if self.holder is not None and _alive(self.holder) else set()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if (
                    mark in (entry / "cmdline").read_bytes()
                    or group in (entry / "cgroup").read_bytes()
                ):
                    found.append(int(entry.name))
        return sorted((set(found) | holder) - {os.getpid()})

    def stop(self) -> None:
        """Remove every container, stop what is left by PID and remove the directory
        (idempotent).

        Raises:
            LabError: A process survived SIGKILL or the directory could not be removed.
        """
        if self.holder is not None and _alive(self.holder) and podman_available():
            with contextlib.suppress(LabError):
                self.run(["rm", "--all", "--force", "--time", "0"], check=False, timeout=60)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + STOP_GRACE
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
        left = self.pids()
        if left:
            raise LabError(f"{self.host.name}: podman processes survived SIGKILL: {left}")
        _remove_tree(self.base_dir)
        _remove_tree(self.runroot)
        for target in reversed(self.machine_dirs):
            with contextlib.suppress(OSError):
                target.rmdir()  # empty: everything went to the podman's own directory
        self.machine_dirs = []
        with contextlib.suppress(OSError):
            SHORT_RUN_ROOT.rmdir()  # when no other podman uses it


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _remove_tree(path: Path) -> None:
    """Remove ``path``; vfs layers may hold read-only directories, made writable first."""
    if not path.exists():
        return

    def writable(function: object, name: str, _exc: object) -> None:
        os.chmod(os.path.dirname(name), 0o700)
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(name) and not os.path.islink(name):
                shutil.rmtree(name, onerror=writable)
            else:
                os.unlink(name)

    try:
        shutil.rmtree(path, onerror=writable)
    except OSError as exc:
        raise LabError(f"cannot remove {path}: {exc}") from exc
