"""The agent's side of the DNS worker processes (:mod:`._worker`): sockets, zones, supervision.

:class:`WorkerPool` opens ``workers`` UDP sockets per listen address with ``SO_REUSEPORT``
(the first fixes the port when the address asks for any), starts one worker per set of sockets,
feeds each the zone's tasks whenever they change (the newest only: a worker that fell behind
skips the zones in between), adds up their counters, forwards the queries they hand over, and
starts a new worker when one exits (after a second, so a worker that cannot start does not
spin). It keeps every socket open itself, so a worker's restart loses no port and the kernel
keeps queueing its share of queries meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import socket
import struct
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import trio

from vxnet.dns._tally import Tally
from vxnet.dns._worker import WorkerSettings, read_forward

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from vxnet.records import TaskRecord

__all__ = ["WorkerPool", "reuseport_sockets", "set_freebind"]

log = logging.getLogger("vxnet.dns")

RESTART = 1.0  # seconds before a worker that exited is started again
READY_TIMEOUT = 60.0  # seconds for a new worker to answer from its first zone
STOP_TIMEOUT = 2.0
REPORT_SIZE = 65536
REPORT_BUFFER = 4 << 20  # bytes (the kernel keeps it within net.core.wmem_max)


IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_FREEBIND = 78  # linux/in6.h (Python does not name it)


def set_freebind(sock: Any) -> None:
    """Let ``sock`` bind an address no device holds yet (``IP_FREEBIND``): the agent's DNS
    binds its container addresses before the overlay puts them on ``vxnet-dns``."""
    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)


def reuseport_sockets(
    host: str, port: int, count: int, *, freebind: bool = False
) -> list[socket.socket]:
    """``count`` UDP sockets bound to ``host`` and ``port`` (0: one the kernel picks, the same
    for all) with ``SO_REUSEPORT``, blocking (the workers wait in ``recvmmsg``; the agent only
    sends on them, with ``MSG_DONTWAIT``); ``freebind``: the address may not be on a device yet.

    Raises:
        OSError: The address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if freebind:
                set_freebind(sock)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class WorkerPool:
    """Worker processes answering UDP on ``sockets`` (per listen address, one per worker).

    Args:
        sockets: ``sockets[a][k]``: worker ``k``'s socket for listen address ``a``.
        settings: What every worker is told at its start.
        forward: Called for a query a worker hands over: ``(query, client)``, giving the reply
            to send (or None).
    """

    def __init__(
        self,
        sockets: Sequence[Sequence[socket.socket]],
        settings: WorkerSettings,
        forward: Callable[[bytes, str], Awaitable[bytes | None]],
    ) -> None:
        self.sockets = sockets
        self.count = len(sockets[0]) if sockets else 0
        self.settings = settings
        self._forward = forward
        self._zone: bytes | None = None  # the newest zone's frame
        self._version = 0
        self._serial = 0  # the newest zone's
        self._zone_changed = trio.Event()
        self._reports: list[dict[str, Any]] = [{} for _ in range(self.count)]
        self._retired = Tally()  # the counters of workers that exited
        self.serials: list[int] = [0] * self.count  # the zone each worker answers from
        self.restarts = 0

    async def publish(self, serial: int, tasks: list[TaskRecord]) -> None:
        """Give every worker the zone of ``tasks`` with ``serial`` (pickled off the event loop)."""
        payload = await trio.to_thread.run_sync(pickle.dumps, (serial, tasks), 5)
        if serial < self._serial:
            return  # a newer zone was pickled faster
        self._serial = serial
        self._zone = struct.pack("!I", len(payload)) + payload
        self._version += 1
        self._zone_changed.set()
        self._zone_changed = trio.Event()

    def totals(self) -> Tally:
        """The workers' counters added up (those of exited workers included)."""
        tally = Tally()
        tally.add(self._retired.snapshot())
        for report in self._reports:
            tally.add(report)
        return tally

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled; started once each answers from the first zone.

        Raises:
            RuntimeError: A worker did not get ready (its output says why).
        """
        async with trio.open_nursery() as nursery:
            for k in range(self.count):
                await nursery.start(self._supervise, k)
            task_status.started()

    async def _supervise(self, k: int, *, task_status: trio.TaskStatus[None]) -> None:
        first = True
        while True:
            ready = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_one, k, ready, nursery.cancel_scope)
                if first:
                    with trio.move_on_after(READY_TIMEOUT):
                        await ready.wait()
                    if not ready.is_set():
                        raise RuntimeError(f"DNS worker {k} did not start (see the log above)")
                    task_status.started()
                    first = False
            self._retired.add(self._reports[k])
            self._reports[k] = {}
            self.restarts += 1
            log.warning("DNS worker %d exited; starting another in %.0f s", k, RESTART)
            await trio.sleep(RESTART)

    async def _run_one(self, k: int, ready: trio.Event, done: trio.CancelScope) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):  # room for bursts of queries to forward
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, REPORT_BUFFER)
        fds = [group[k].fileno() for group in self.sockets]
        command = [sys.executable, "-m", "vxnet.dns._worker", "--report", str(theirs.fileno())]
        for fd in fds:
            command += ["--udp", str(fd)]
        try:
            process = await trio.lowlevel.open_process(
                command, stdin=subprocess.PIPE, pass_fds=[*fds, theirs.fileno()]
            )
        finally:
            theirs.close()
        reports = trio.socket.from_stdlib_socket(mine)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._feed, process, done)
                nursery.start_soon(self._read_reports, k, reports, ready, nursery)
                code = await process.wait()
                log.warning("DNS worker %d (pid %d) exited with %s", k, process.pid, code)
                nursery.cancel_scope.cancel()
        finally:
            reports.close()
            with trio.CancelScope(shield=True):
                await _stop(process)
        done.cancel()

    async def _feed(self, process: trio.Process, done: trio.CancelScope) -> None:
        stdin = process.stdin
        assert stdin is not None
        settings = pickle.dumps(self.settings, 5)
        sent = 0
        try:
            await stdin.send_all(struct.pack("!I", len(settings)) + settings)
            while True:
                while sent == self._version:
                    await self._zone_changed.wait()
                sent, frame = self._version, self._zone
                if frame is not None:
                    await stdin.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            done.cancel()  # the worker went away; _run_one sees it exit

    async def _read_reports(
        self, k: int, reports: Any, ready: trio.Event, nursery: trio.Nursery
    ) -> None:
        while True:
            report: bytes = await reports.recv(REPORT_SIZE)
            kind = report[:1]
            if kind == b"F":
                request = read_forward(report)
                if request is not None and request[0] < len(self.sockets):
                    nursery.start_soon(self._forward_one, *request)
            elif kind == b"S":
                with contextlib.suppress(ValueError):
                    data = json.loads(report[1:])
                    if isinstance(data, dict):
                        self._reports[k] = data
            elif kind == b"R" and report[1:].isdigit():
                self.serials[k] = int(report[1:])
                ready.set()

    async def _forward_one(self, index: int, peer: tuple[str, int], query: bytes) -> None:
        reply = await self._forward(query, peer[0])
        if reply is not None:
            with contextlib.suppress(OSError):
                self.sockets[index][0].sendto(reply, socket.MSG_DONTWAIT, peer)


async def _stop(process: trio.Process) -> None:
    if process.stdin is not None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await process.stdin.aclose()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with trio.move_on_after(STOP_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
