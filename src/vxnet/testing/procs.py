"""A replicated log of real ``vxnet log serve`` processes on loopback, for tests and benchmarks.

Each replica is a child process with its own master config and data directory under ``root``;
every process is stopped by its PID (SIGTERM, then SIGKILL) when the cluster closes.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from typing import IO, TYPE_CHECKING, Any

import trio

from vxnet._closing import ClosesOnExit
from vxnet.pki import CA_CERT, Tls, TlsFiles, init_ca, issue
from vxnet.replog import LogUnavailable, request_once

if TYPE_CHECKING:
    from pathlib import Path

    from vxnet.http import HttpClient

__all__ = ["LogProcesses", "MasterProcesses", "free_ports"]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` TCP ports that were free a moment ago (held open together, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LogProcesses(ClosesOnExit):
    """``n`` replicas as processes; :meth:`start` and :meth:`kill` them one by one.

    Args:
        root: A directory of this cluster's own (configs, data, logs).
        n: The number of replicas (odd).
        tls: Give every replica a master certificate from a CA in ``root/pki`` (and the
            helpers an operator's, :attr:`client_tls`), and turn TLS on.
    """

    command: tuple[str, ...] = ("log", "serve")

    def __init__(
        self, root: Path, n: int = 3, host: str = "127.0.0.1", *, tls: bool = False
    ) -> None:
        self.root = root
        self.n = n
        root.mkdir(parents=True, exist_ok=True)
        self.addresses = [(host, p) for p in free_ports(n, host)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: dict[int, IO[bytes]] = {}
        self.pki = root / "pki"
        self.client_tls: Tls | None = None
        if tls:
            init_ca(self.pki)
            for i in range(n):
                issue(self.pki, "master", f"replica{i}", ips=[self.host(i)])
            operator = issue(self.pki, "operator", "operator")
            self.client_tls = Tls(TlsFiles(self.pki / CA_CERT, operator.cert, operator.key))
        for i in range(n):
            self.config(i).write_text(self.config_text(i))

    def host(self, i: int) -> str:
        """The address replica ``i`` is dialled at."""
        return self.addresses[i][0]

    def tls_text(self, i: int) -> str:
        """The ``[tls]`` table of replica ``i``'s config ("" without TLS)."""
        if self.client_tls is None:
            return ""
        return (
            f'\n[tls]\nca = "{self.pki / CA_CERT}"\ncert = "{self.pki / f"replica{i}.pem"}"\n'
            f'key = "{self.pki / f"replica{i}-key.pem"}"\n'
        )

    def config_text(self, i: int) -> str:
        """Replica ``i``'s master config (TOML)."""
        replicas = ", ".join(f'"{h}:{p}"' for h, p in self.addresses)
        h, p = self.addresses[i]
        return (
            f'[master]\ndata_dir = "{self.root / f"data{i}"}"\n\n'
            f'[log]\nlisten = "{h}:{p}"\nreplicas = [{replicas}]\nquorum = {self.n // 2 + 1}\n'
            + self.tls_text(i)
        )

    def config(self, i: int) -> Path:
        """Replica ``i``'s master config file."""
        return self.root / f"master{i}.toml"

    def start(self, i: int) -> None:
        """Start replica ``i`` (its data directory is kept between starts)."""
        if i in self.procs and self.procs[i].poll() is None:
            raise RuntimeError(f"replica {i} is already running")
        log = (self.root / f"replica{i}.log").open("ab")
        self._logs[i] = log
        self.procs[i] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vxnet",
                *self.command,
                "-c",
                str(self.root / f"master{i}.toml"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def start_all(self) -> None:
        for i in range(self.n):
            self.start(i)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to replica ``i`` and reap it."""
        proc = self.procs.pop(i)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        self._logs.pop(i).close()

    def running(self) -> list[int]:
        return sorted(i for i, p in self.procs.items() if p.poll() is None)

    def log_text(self, i: int) -> str:
        path = self.root / f"replica{i}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def status(self, i: int) -> dict[str, Any] | None:
        """Replica ``i``'s view, or None when it does not answer."""
        try:
            answer = await request_once(
                self.addresses[i], {"op": "status"}, answer_within=1.0, tls=self.client_tls
            )
        except LogUnavailable:
            return None
        return answer if answer.get("ok") else None

    async def leader(self, within: float = 30.0) -> int:
        """The replica that coordinates (and that the others follow); waits up to ``within``.

        Raises:
            TimeoutError: No replica coordinates in time.
        """
        with trio.move_on_after(within):
            while True:
                for i in self.running():
                    view = await self.status(i)
                    if view is not None and view["role"] == "coordinator":
                        return i
                await trio.sleep(0.05)
        logs = "\n".join(f"--- replica {i}\n{self.log_text(i)[-2000:]}" for i in range(self.n))
        raise TimeoutError(f"no log coordinator within {within:g} s\n{logs}")

    async def formed(self, within: float = 30.0) -> None:
        """Wait until every running replica votes (a new log needs all of them once).

        Raises:
            TimeoutError: Some replica is not voting in time.
        """
        views: list[Any] = []
        with trio.move_on_after(within):
            while True:
                views = [await self.status(i) for i in self.running()]
                if all(v is not None and _voting(v) for v in views):
                    return
                await trio.sleep(0.05)
        raise TimeoutError(f"the replicas are not all voting within {within:g} s: {views}")

    def close(self) -> None:
        for i in list(self.procs):
            self.kill(i, signal.SIGTERM)


def _voting(view: dict[str, Any]) -> bool:
    log = view.get("log", view)  # a master's /overlay-master/leader view holds the log's
    return isinstance(log, dict) and log.get("status") == "VOTING"


class MasterProcesses(LogProcesses):
    """``n`` ``vxnet master`` processes on 127.0.0.1, 127.0.0.2, ... (one loopback address each,
    the same API and log ports on all, as on real hosts).

    Args:
        root: A directory of this cluster's own.
        n: The number of masters (odd).
        network: TOML text of the ``[network]`` section (and its overlays).
        extra: More TOML for the ``[master]`` section (for example a token).
    """

    command = ("master",)

    def __init__(
        self, root: Path, n: int = 3, network: str = "", extra: str = "", *, tls: bool = False
    ) -> None:
        self.network = network
        self.extra = extra
        api_port, log_port = free_ports(2)
        self.api_port = api_port
        self._log_port = log_port
        super().__init__(root, n, tls=tls)

    def _hosts(self) -> list[str]:
        return [f"127.0.0.{i + 1}" for i in range(self.n)]

    def host(self, i: int) -> str:
        return self._hosts()[i]

    def config_text(self, i: int) -> str:
        hosts = self._hosts()
        self.addresses = [(h, self._log_port) for h in hosts]
        replicas = ", ".join(f'"{h}:{self._log_port}"' for h in hosts)
        return (
            f'[master]\nlisten = "{hosts[i]}:{self.api_port}"\n'
            f'data_dir = "{self.root / f"data{i}"}"\n{self.extra}\n'
            f'[log]\nlisten = "{hosts[i]}:{self._log_port}"\nreplicas = [{replicas}]\n'
            f"quorum = {self.n // 2 + 1}\n\n{self.network}\n{self.tls_text(i)}"
        )

    def url(self, i: int) -> str:
        """Master ``i``'s API (``https://`` with TLS on)."""
        scheme = "http" if self.client_tls is None else "https"
        return f"{scheme}://{self._hosts()[i]}:{self.api_port}"

    def http_client(self, **options: Any) -> HttpClient:
        """An HTTP client of the masters' API; with TLS on, it holds the operator's certificate
        and accepts only masters' certificates."""
        from vxnet.http import HttpClient

        tls = self.client_tls
        if tls is not None:
            options.update(tls=lambda: tls.client, server_role="master")
        return HttpClient(**options)

    async def status(self, i: int) -> dict[str, Any] | None:
        """Master ``i``'s ``/overlay-master/leader`` answer, or None."""
        from vxnet.http import HttpError

        try:
            async with self.http_client(timeout=1.0, connect_timeout=1.0, keep_alive=False) as http:
                r = await http.request("GET", f"{self.url(i)}/overlay-master/leader")
            return dict(r.json()) if r.status == 200 else None
        except (HttpError, ValueError):
            return None

    async def leader(self, within: float = 30.0) -> int:
        """The master that leads and is ready to answer; waits up to ``within``."""
        with trio.move_on_after(within):
            while True:
                for i in self.running():
                    view = await self.status(i)
                    if view is not None and view["is_leader"] and view["ready"]:
                        return i
                await trio.sleep(0.05)
        logs = "\n".join(f"--- master {i}\n{self.log_text(i)[-2000:]}" for i in range(self.n))
        raise TimeoutError(f"no ready master leader within {within:g} s\n{logs}")
