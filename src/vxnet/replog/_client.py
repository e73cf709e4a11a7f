"""A client of the replicated log: appends through the coordinator, wherever it is.

``async with open_log_client(replicas) as client: position = await client.append(value)``.
The client keeps one connection, to the coordinator as far as it knows, and pipelines requests on
it. A replica that does not coordinate answers with the coordinator's address and the client
follows it; while no coordinator is elected it retries with backoff until its timeout. An answer
that leaves the append's fate open (the coordinator stepped down, the connection broke after the
request went out, no answer in time) raises :class:`AppendUncertain`: the value may or may not be
in the log, and the caller decides whether to append it again (the master's writes are idempotent).

Requests on the wire (maps, see :mod:`._logwire`): ``{"op": "append", "id", "value": bytes}`` ->
``{"id", "ok": true, "position"}``; ``{"op": "status", "id"}`` -> the replica's view;
``{"op": "read", "id", "from", "limit"}`` -> ``{"entries": [[position, value]], "commit",
"snapshot"}``. A failure is ``{"id", "ok": false, "error", "definite", "leader"}``, where
``definite`` says the request certainly had no effect.
"""

from __future__ import annotations

import itertools
import random
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from vxnet.replog._server import AppendUncertain, NotLeader, format_address, open_log_stream
from vxnet.replog._wire import (
    FrameReader,
    WireError,
    client_hello,
    decode_map,
    encode_frame,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from vxnet.pki import Tls

__all__ = [
    "AppendUncertain",
    "LogClient",
    "LogUnavailable",
    "NotLeader",
    "open_log_client",
    "request_once",
]

CONNECT_TIMEOUT = 1.0
RETRY_MIN, RETRY_MAX = 0.02, 0.25


class LogUnavailable(Exception):
    """No replica could take the request in time (none reachable, or no coordinator)."""


class _Lost(Exception):
    """The connection broke with the request possibly sent."""


class _Connection:
    """One pipelined connection to a replica; answers are matched to requests by id."""

    def __init__(self, address: tuple[str, int], stream: trio.abc.Stream) -> None:
        self.address = address
        self.stream = stream
        self.reader = FrameReader()
        self.waiting: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self.broken: str | None = None
        self._ids = itertools.count(1)
        self._send_lock = trio.Lock()

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.broken is not None:
            raise _Lost(self.broken)
        rid = next(self._ids)
        done = trio.Event()
        slot: list[dict[str, Any]] = []
        self.waiting[rid] = (done, slot)
        try:
            async with self._send_lock:
                await self.stream.send_all(encode_frame({**body, "id": rid}))
            await done.wait()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.fail(f"{format_address(*self.address)}: {exc}")
        finally:
            self.waiting.pop(rid, None)
        if not slot:
            raise _Lost(self.broken or "connection closed")
        return slot[0]

    async def read_answers(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(256 * 1024)
                if not data:
                    self.fail(f"{format_address(*self.address)} closed the connection")
                    return
                for body in self.reader.feed(data):
                    answer = decode_map(body, "answer")
                    waiter = self.waiting.pop(answer["id"], None)
                    if waiter is not None:
                        waiter[1].append(answer)
                        waiter[0].set()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, WireError) as exc:
            self.fail(f"{format_address(*self.address)}: {exc}")

    def fail(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason
        for done, _ in self.waiting.values():
            done.set()
        self.waiting.clear()


async def _connect(address: tuple[str, int], tls: Tls | None) -> trio.abc.Stream:
    with trio.fail_after(CONNECT_TIMEOUT):
        stream = await open_log_stream(address, tls)
    try:
        await stream.send_all(encode_frame(client_hello()))
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


class LogClient:
    """Appends to the replicated log; use :func:`open_log_client`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        replicas: Sequence[tuple[str, int]],
        timeout: float,
        tls: Tls | None = None,
    ) -> None:
        if not replicas:
            raise ValueError("no replica addresses")
        self.tls = tls
        self._nursery = nursery
        self.replicas = list(replicas)
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._target: tuple[str, int] | None = None
        self._rotation = random.randrange(len(self.replicas))
        self._connect_lock = trio.Lock()

    async def append(self, value: bytes) -> int:
        """Append ``value``; its log position once chosen.

        Raises:
            AppendUncertain: The append may or may not be in the log.
            LogUnavailable: No coordinator took it in time (it is certainly not in the log).
            NotLeader: Never; a redirect is followed.
            ValueError: The log refused the value itself (for example too large).
        """
        deadline = trio.current_time() + self.timeout
        sent = False
        last = "no replica answered"
        retry = RETRY_MIN
        with trio.move_on_at(deadline):
            while True:
                conn = await self._connection(deadline)
                if conn is None:
                    last = "no replica is reachable"
                    await trio.sleep(retry)
                    retry = min(retry * 2, RETRY_MAX)
                    continue
                sent = True
                try:
                    answer = await conn.request({"op": "append", "value": value})
                except _Lost as exc:
                    raise AppendUncertain(f"append: {exc}") from None
                sent = False
                if answer.get("ok"):
                    position = answer.get("position")
                    if type(position) is not int:
                        raise AppendUncertain(f"append: malformed answer {answer!r}")
                    return position
                last = str(answer.get("error"))
                if not answer.get("definite"):
                    raise AppendUncertain(last)
                if last.startswith("append:"):
                    raise ValueError(last)
                leader = answer.get("leader")
                if isinstance(leader, str):
                    self._follow(leader)
                else:
                    await trio.sleep(retry)
                    retry = min(retry * 2, RETRY_MAX)
        if sent:
            raise AppendUncertain(f"append: no answer in {self.timeout:g} s")
        raise LogUnavailable(f"append: not accepted in time: {last}")

    async def status(self) -> dict[str, Any]:
        """The view of the replica this client is connected to."""
        deadline = trio.current_time() + self.timeout
        conn = await self._connection(deadline)
        if conn is None:
            raise LogUnavailable("status: no replica is reachable")
        try:
            return await conn.request({"op": "status"})
        except _Lost as exc:
            raise LogUnavailable(f"status: {exc}") from None

    def _follow(self, leader: str) -> None:
        from vxnet.config import parse_hostport

        try:
            address = parse_hostport(leader)
        except ValueError:
            return
        if self._conn is not None and self._conn.address != address:
            self._drop()
        self._target = address

    def _drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.fail("switched replica")
            self._nursery.start_soon(trio.aclose_forcefully, conn.stream)

    async def _connection(self, deadline: float) -> _Connection | None:
        """The current connection, or a new one (to the known coordinator, else the next)."""
        async with self._connect_lock:
            if self._conn is not None and self._conn.broken is None:
                return self._conn
            self._drop()
            for _ in range(len(self.replicas)):
                if trio.current_time() >= deadline:
                    return None
                address = self._target
                if address is None:
                    address = self.replicas[self._rotation % len(self.replicas)]
                    self._rotation += 1
                self._target = None
                try:
                    stream = await _connect(address, self.tls)
                except (OSError, trio.TooSlowError):
                    continue
                conn = _Connection(address, stream)
                self._conn = conn
                self._nursery.start_soon(conn.read_answers)
                return conn
            return None

    async def aclose(self) -> None:
        self._drop()


@asynccontextmanager
async def open_log_client(
    replicas: Sequence[tuple[str, int]], *, answer_within: float = 5.0, tls: Tls | None = None
) -> AsyncIterator[LogClient]:
    """A :class:`LogClient` for the log of ``replicas``, closed on the way out.

    ``answer_within`` bounds each call (seconds), retries and redirects included.
    """
    async with trio.open_nursery() as nursery:
        client = LogClient(nursery, replicas, answer_within, tls)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()


async def request_once(
    address: tuple[str, int],
    body: dict[str, Any],
    *,
    answer_within: float = 5.0,
    tls: Tls | None = None,
) -> dict[str, Any]:
    """Send one request to one replica and return its answer.

    Raises:
        LogUnavailable: The replica cannot be reached or did not answer in time.
    """
    where = format_address(*address)
    try:
        with trio.fail_after(answer_within):
            stream = await _connect(address, tls)
            async with stream:
                await stream.send_all(encode_frame({**body, "id": 1}))
                reader = FrameReader()
                while True:
                    data = await stream.receive_some(256 * 1024)
                    if not data:
                        raise LogUnavailable(f"{where} closed the connection without answering")
                    for answer in reader.feed(data):
                        return decode_map(answer, "answer")
    except trio.TooSlowError:
        raise LogUnavailable(f"{where}: no answer in {answer_within:g} s") from None
    except (OSError, trio.BrokenResourceError, WireError) as exc:
        raise LogUnavailable(f"{where}: {exc}") from None
