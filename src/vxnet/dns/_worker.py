"""A DNS worker process: answers UDP queries from the agent's zone on a CPU of its own.

The agent (:class:`._pool.WorkerPool`) opens, for every ``dns.listen`` address, one UDP socket
per worker, all bound to that address with ``SO_REUSEPORT`` (the kernel spreads the clients'
queries over them by address and port, as Knot's and NSD's UDP workers share a port), and
starts ``python -m vxnet.dns._worker --udp FD ... --report FD`` with its sockets. The agent's
own process then does no UDP answering: a flood of queries costs the worker's CPU, not the
agent's gossip, store and API.

Agent to worker, on standard input: frames of a 4-byte big-endian length and a pickle (the
agent's own data through a pipe only the two hold): first the settings (:class:`WorkerSettings`),
then, whenever the zone changes, ``(serial, tasks)``: the worker builds its :class:`~._zone.Zone`
from the tasks (on top of the previous one, answering meanwhile from the old zone) and swaps it
in. It answers nothing until the first zone came (queries wait in the kernel), and exits when
standard input closes: the agent stopped, or died (even by SIGKILL the kernel closes its end;
no ``PR_SET_PDEATHSIG``, which fires when the agent's thread that started the worker exits).

Worker to agent, on the ``--report`` datagram socket (JSON and bytes, never pickles): every
half second ``S`` and the worker's :meth:`~._tally.Tally.snapshot`; ``R`` and the serial of
each zone once it answers from it; and ``F`` for every query
to forward (names outside the zone, after the worker's per-client forwarding limit): the
socket's index, the client's address and the query. The agent forwards it within its own cap
of queries waiting on upstreams and sends the answer through its copy of the same socket. A
report the agent is too slow to take is dropped (counted as ``forward_busy``).

Each socket is served by a thread of blocking ``recvmmsg``/``sendmmsg`` batches (:mod:`._mmsg`):
no event loop, one system call each way per batch of up to 64 queries.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import pickle
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from vxnet.dns._mmsg import BUFFER, Batch
from vxnet.dns._rrl import SEND, RateLimiter
from vxnet.dns._tally import Tally
from vxnet.dns._wire import SERVFAIL, error_reply
from vxnet.dns._zone import Zone

__all__ = ["WorkerSettings", "forward_request", "main", "read_forward", "serve"]

log = logging.getLogger("vxnet.dns.worker")

BATCH = 64
REPORT = 0.5  # seconds between the worker's reports of its counters
FORWARD_RATE = 1000  # forwarded queries per second from one client address (as the agent's)
MAX_FRAME = 1 << 31  # a zone's frame: the agent's, so only a sanity bound


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a worker needs besides its sockets: the zone's name and the rate limits."""

    suffix: str
    rate_limit: int
    rate_limit_slip: int


def forward_request(index: int, address: bytes, port: int, query: bytes) -> bytes:
    """The ``F`` report asking the agent to forward ``query`` from ``address`` (4 or 16 bytes)
    and ``port``, received on socket ``index``."""
    return b"F" + struct.pack("!BBH", index, len(address), port) + address + query


def read_forward(report: bytes) -> tuple[int, tuple[str, int], bytes] | None:
    """The socket index, client and query of an ``F`` report; None when it is not one."""
    if len(report) < 5 or report[:1] != b"F" or report[2] not in (4, 16):
        return None
    index, size, port = struct.unpack_from("!BBH", report, 1)
    address = report[5 : 5 + size]
    query = report[5 + size :]
    if len(address) != size or not 12 <= len(query) <= BUFFER:
        return None
    family = socket.AF_INET if size == 4 else socket.AF_INET6
    return index, (socket.inet_ntop(family, address), port), query


class _Worker:
    def __init__(
        self, settings: WorkerSettings, sockets: list[socket.socket], report: socket.socket
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.report = report
        self.zone: Zone | None = None
        self.ready = threading.Event()
        self.tally = Tally()
        self.lock = threading.Lock()  # the tally, shared by the serving threads and the reporter
        self.limiter = (
            RateLimiter(settings.rate_limit, settings.rate_limit_slip)
            if settings.rate_limit
            else None
        )
        self.forward_limiter = RateLimiter(FORWARD_RATE, slip=0)

    # --- the zone -------------------------------------------------------------------------------

    def read_zones(self, stream: Any) -> None:
        """Take zones from the agent until it closes the pipe."""
        while True:
            frame = _read_frame(stream)
            if frame is None:
                return
            serial, tasks = pickle.loads(frame)  # noqa: S301 (the agent's own pipe)
            started = time.perf_counter()
            self.zone = Zone(tasks, suffix=self.settings.suffix, serial=serial, previous=self.zone)
            gc.freeze()  # the zone lives long: collections need not walk it again
            took = time.perf_counter() - started
            log.debug("zone %d: %d tasks in %.3f s", serial, len(tasks), took)
            self.ready.set()
            self.report.send(b"R" + str(serial).encode())  # the agent waits for this one

    # --- answering ------------------------------------------------------------------------------

    def serve(self, index: int) -> None:
        """Answer on socket ``index`` for ever (a thread)."""
        self.ready.wait()
        batch = Batch(self.sockets[index], BATCH, timestamps=True)
        limiter = self.limiter
        tally = self.tally
        lock = self.lock
        while True:
            received = batch.receive(wait=True)
            if not received:
                continue
            zone = self.zone
            assert zone is not None
            if limiter is not None:
                limiter.now = time.monotonic()
            missed = batch.answer_all(received, zone.fast, limiter)
            served = batch.queued
            missing = 0
            out = batch.out_view
            for slot in range(served):
                if out[slot * BUFFER + 3] & 0x0F:
                    missing += 1
            for i in missed:
                self._slow(zone, batch, index, i)
            batch.flush()
            waited = batch.waited(received, time.time_ns())
            with lock:
                tally.count_batch(served, missing, waited)

    def _slow(self, zone: Zone, batch: Batch, index: int, i: int) -> None:
        began = time.perf_counter()
        data = batch.query(i)
        answer = zone.answer(data)
        if answer.reply is not None:
            reply: bytes | None = answer.reply
            if self.limiter is not None:
                reply = self.limiter.limit(batch.prefix(i), answer.reply)
            if reply is not None:
                batch.reply(i, reply)
            with self.lock:
                self.tally.count(answer.rcode, time.perf_counter() - began)
            return
        if not answer.forward:
            with self.lock:
                self.tally.count("dropped", time.perf_counter() - began)
            return
        host, port = batch.peer(i)
        address = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        self.forward_limiter.now = time.monotonic()
        if self.forward_limiter.verdict(address) != SEND:
            with self.lock:
                self.tally.count("forward_limited", time.perf_counter() - began)
            return
        try:
            self.report.send(forward_request(index, address, port, data), socket.MSG_DONTWAIT)
        except OSError:  # the agent is this far behind: SERVFAIL now, as it would answer
            busy = error_reply(data, SERVFAIL)
            if busy is not None:
                batch.reply(i, busy)
            with self.lock:
                self.tally.count("forward_busy", time.perf_counter() - began)

    # --- reports --------------------------------------------------------------------------------

    def report_loop(self) -> None:
        """Send the counters to the agent every :data:`REPORT` seconds (a thread)."""
        while True:
            time.sleep(REPORT)  # a period, not a wait for readiness
            with self.lock:
                snapshot = self.tally.snapshot()
            if self.limiter is not None:
                snapshot["limited"] = self.limiter.limited
                snapshot["slipped"] = self.limiter.slipped
            try:
                self.report.send(b"S" + json.dumps(snapshot).encode(), socket.MSG_DONTWAIT)
            except OSError:
                continue  # the next one carries the same totals


def _read_frame(stream: Any) -> bytes | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = struct.unpack("!I", header)[0]
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes from the agent")
    data = stream.read(size)
    return data if len(data) == size else None


def serve(sockets: list[socket.socket], report: socket.socket, stream: Any) -> None:
    """Run a worker on ``sockets`` until ``stream`` (the agent's pipe) ends."""
    frame = _read_frame(stream)
    if frame is None:
        return
    settings = pickle.loads(frame)  # noqa: S301 (the agent's own pipe)
    if not isinstance(settings, WorkerSettings):
        raise TypeError("the first frame from the agent must be the worker's settings")
    worker = _Worker(settings, sockets, report)

    def guarded(target: Any, *args: Any) -> None:
        try:
            target(*args)
        except BaseException:
            log.exception("DNS worker %d failed", os.getpid())
            os._exit(1)  # the agent starts a new one

    for index in range(len(sockets)):
        threading.Thread(target=guarded, args=(worker.serve, index), daemon=True).start()
    threading.Thread(target=guarded, args=(worker.report_loop,), daemon=True).start()
    worker.read_zones(stream)


def main(argv: list[str] | None = None) -> None:
    """``python -m vxnet.dns._worker --udp FD [--udp FD ...] --report FD``."""
    parser = argparse.ArgumentParser(prog="vxnet.dns._worker")
    parser.add_argument("--udp", type=int, action="append", required=True)
    parser.add_argument("--report", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sockets = [socket.socket(fileno=fd) for fd in args.udp]
    for sock in sockets:
        sock.setblocking(True)  # the serving threads wait in recvmmsg
    report = socket.socket(fileno=args.report)
    serve(sockets, report, sys.stdin.buffer)
    os._exit(0)  # the agent closed the pipe: stop, with the serving threads


if __name__ == "__main__":
    from vxnet.dns import _worker  # the module's own classes, not copies under __main__

    _worker.main()
