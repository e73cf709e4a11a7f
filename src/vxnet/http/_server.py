"""A small HTTP/1.1 server for ASGI applications: h11 on trio, one task per connection.

The masters' and agents' APIs are Starlette applications. They were served by hypercorn, whose
per-request machinery (a task per request, an idle-timeout task restarted after every response,
locks and shielded cancel scopes around every send) capped a trivial endpoint at about 1,100
requests per second on a 2-CPU machine, below what a master must answer. This server keeps the
HTTP/1.1 protocol in h11 (python-hyper's parser and framer, the one hypercorn uses) and does the
rest in the connection's own task: read a request, run the application, write the whole response
with one ``send_all``, next request. The same endpoint answers about 3,300 requests per second.

What it does: keep-alive and pipelined requests in order; request bodies with Content-Length or
chunked, refused with 413 beyond ``max_body``; responses buffered and sent in one piece, or
streamed when the application sends ``more_body`` (chunked when it gave no length); 400 for a
request h11 cannot parse; 500 (and a logged traceback) when the application raises before it
answered; a connection idle for ``idle_timeout`` is closed. No TLS, no HTTP/2, no WebSocket, no
lifespan events: the APIs need none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias
from urllib.parse import unquote

import h11
import trio

__all__ = ["MAX_BODY", "serve_api", "serve_asgi"]

log = logging.getLogger("vxnet.http")

MAX_BODY = 1024 * 1024
IDLE_TIMEOUT = 60.0
READ_SIZE = 65536

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
App: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


class _Connection:
    def __init__(
        self,
        app: App,
        stream: trio.SocketStream,
        server: tuple[str, int],
        max_body: int,
        idle_timeout: float,
    ) -> None:
        self.app = app
        self.stream = stream
        self.server = server
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            peer = stream.socket.getpeername()
            self.client: tuple[str, int] | None = (str(peer[0]), int(peer[1]))
        except OSError:
            self.client = None

    async def _next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_after(self.idle_timeout) as scope:
                data = await self.stream.receive_some(READ_SIZE)
            if scope.cancelled_caught:
                return h11.ConnectionClosed()
            self.h11.receive_data(data)

    async def run(self) -> None:
        try:
            while True:
                try:
                    event = await self._next_event()
                except h11.RemoteProtocolError as exc:
                    await self._simple(400, f"bad request: {exc}")
                    return
                if not isinstance(event, h11.Request):
                    return
                try:
                    body = await self._body()
                except _BodyTooLarge:
                    await self._simple(413, f"body larger than {self.max_body} bytes")
                    return
                except h11.RemoteProtocolError as exc:
                    await self._simple(400, f"bad request: {exc}")
                    return
                await self._respond(event, body)
                if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
                    return
                try:
                    self.h11.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _body(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_body:
                    raise _BodyTooLarge
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise h11.RemoteProtocolError("connection closed inside the request body")

    async def _respond(self, request: h11.Request, body: bytes) -> None:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode(),
            "method": request.method.decode(),
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in request.headers],
            "client": self.client,
            "server": self.server,
        }
        delivered = False
        started: Message | None = None
        streaming = False
        finished = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await trio.sleep_forever()  # a client that is gone shows up as a failed send
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            nonlocal started, streaming, finished
            if message["type"] == "http.response.start":
                started = message
                return
            if message["type"] != "http.response.body" or started is None or finished:
                return
            data = bytes(message.get("body", b""))
            if message.get("more_body", False):
                if not streaming:
                    streaming = True
                    await self.stream.send_all(self._head(started) + self.h11.send(h11.Data(data)))
                elif data:
                    await self.stream.send_all(self.h11.send(h11.Data(data)))
                return
            finished = True
            if streaming:
                tail = (self.h11.send(h11.Data(data)) if data else b"") + self._end()
                await self.stream.send_all(tail)
                return
            out = self._head(started) + (self.h11.send(h11.Data(data)) if data else b"")
            await self.stream.send_all(out + self._end())

        try:
            await self.app(scope, receive, send)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise
        except Exception:
            log.exception("%s %s: the application failed", scope["method"], target)
            if started is None:
                await self._simple(500, "internal error")
                return
            raise trio.BrokenResourceError("response broken off") from None
        if not finished:
            if started is None:
                await self._simple(500, "the application sent no response")
            else:
                await self.stream.send_all(
                    (b"" if streaming else self._head(started)) + self._end()
                )

    def _head(self, start: Message) -> bytes:
        headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
        data: bytes = self.h11.send(h11.Response(status_code=int(start["status"]), headers=headers))
        return data

    def _end(self) -> bytes:
        data: bytes = self.h11.send(h11.EndOfMessage())
        return data

    async def _simple(self, status: int, text: str) -> None:
        body = ('{"error": "' + text.replace('"', "'") + '"}').encode()
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            response = h11.Response(
                status_code=status,
                headers=[
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            )
            await self.stream.send_all(
                self.h11.send(response) + self.h11.send(h11.Data(body)) + self._end()
            )
        except (h11.LocalProtocolError, trio.BrokenResourceError, OSError):
            pass


async def serve_asgi(
    app: App,
    host: str,
    port: int,
    *,
    max_body: int = MAX_BODY,
    idle_timeout: float = IDLE_TIMEOUT,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; report the bound (host, port).

    Raises:
        OSError: The address cannot be bound.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    server = (str(bound[0]), int(bound[1]))

    async def handle(stream: trio.SocketStream) -> None:
        await _Connection(app, stream, server, max_body, idle_timeout).run()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(server)


async def serve_api(
    app: App,
    listen: str,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listen`` (host:port) until cancelled; report the bound URL.

    Raises:
        OSError: The address cannot be bound.
        ValueError: ``listen`` is not host:port.
    """
    from vxnet.config import parse_hostport

    host, port = parse_hostport(listen, any_port=True)

    async def started(bound: tuple[str, int]) -> None:
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        task_status.started(f"http://{shown}:{bound[1]}")

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve_asgi, app, host, port)
        await started(bound)
