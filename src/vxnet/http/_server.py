"""A small HTTP/1.1 server for ASGI applications: h11 on trio, one task per connection.

The masters' and agents' APIs are Starlette applications. They were served by hypercorn, whose
per-request machinery (a task per request, an idle-timeout task restarted after every response,
locks and shielded cancel scopes around every send) capped a trivial endpoint at about 1,100
requests per second on a 2-CPU machine, below what a master must answer. This server keeps the
HTTP/1.1 protocol in h11 (python-hyper's parser and framer, the one hypercorn uses) and does the
rest in the connection's own task: read a request, run the application, write the whole response
with one ``send_all``, next request. The same endpoint answers about 3,300 requests per second.

What it does: keep-alive and pipelined requests in order; request bodies with Content-Length or
chunked; responses buffered and sent in one piece, or streamed when the application sends
``more_body`` (chunked when it gave no length); 500 (and a logged traceback) when the application
raises before it answered. HTTPS when given an ``ssl.SSLContext`` (:func:`serve_asgi` ``tls``),
or a callable answering the one in force (asked at each connection: a reloaded certificate
reaches new connections, established ones keep theirs): the handshake comes first, within
``HANDSHAKE_TIMEOUT``, before a byte of HTTP is read; a connection that fails it is closed. The
application finds the client's verified certificate in the scope (ASGI's TLS extension,
``client_cert_chain``, and its vxnet role under ``vxnet.peer_role``:
:func:`vxnet.pki.peer_role`, read once per connection). No HTTP/2, no WebSocket, no lifespan
events: the APIs need none.

Bounds, each answered and followed by a clean close (the answer, then our end shut, then what the
client still sends read and dropped for at most ``LINGER`` seconds and ``LINGER_BYTES``, so that
it reads the answer instead of a reset):

- a request head over ``max_header`` bytes: 431;
- a body over ``max_body`` bytes: 413 (at once when its Content-Length says so);
- a request whose first byte came ``request_timeout`` seconds ago and that is not complete yet
  (a slow sender, head or body): 408;
- a request h11 cannot parse: 400;
- a connection idle (no byte of a next request) for ``idle_timeout``: closed without a word;
- a connection beyond the caps (:class:`vxnet._limits.ConnectionCaps`: 128 per client address,
  and a total below the process's descriptor limit): 503 with ``Retry-After`` at once, then
  closed (over HTTPS closed before the handshake), so the listener keeps accepting.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, TypeAlias
from urllib.parse import unquote

import h11
import trio

from vxnet._limits import ConnectionCaps
from vxnet.pki import TlsContext, TlsStream, context_now, peer_role, tls_over

__all__ = ["MAX_BODY", "serve_api", "serve_asgi", "serve_asgi_unix"]

log = logging.getLogger("vxnet.http")

MAX_BODY = 1024 * 1024
MAX_HEADER = 64 * 1024
IDLE_TIMEOUT = 60.0
REQUEST_TIMEOUT = 10.0
LINGER = 1.0
LINGER_BYTES = 4 * 1024 * 1024
READ_SIZE = 65536
HANDSHAKE_TIMEOUT = 5.0
BUSY_DRAIN = 64 * 1024  # what a refused connection may still send before it is closed

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
App: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


class _RequestTimeout(Exception):
    pass


def _head_size(request: h11.Request) -> int:
    """The size of ``request``'s head as sent (its parsed form: no folding, no extra spaces)."""
    size = len(request.method) + len(request.target) + 12  # " ", " HTTP/1.1\r\n", "\r\n"
    for name, value in request.headers.raw_items():  # a list (iterating Headers is slow)
        size += len(name) + len(value) + 4  # ": ", "\r\n"
    return size


class _Connection:
    def __init__(
        self,
        app: App,
        stream: trio.abc.Stream,
        server: tuple[str, int | None],
        max_body: int,
        max_header: int,
        idle_timeout: float,
        request_timeout: float,
        client: tuple[str, int] | None,
        tls: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.stream = stream
        self.client = client
        self.scheme = "http" if tls is None else "https"
        self.extensions: dict[str, Any] = {} if tls is None else {"tls": tls}
        self.peer_role = None if tls is None else tls.get("vxnet.peer_role")
        self.server = server
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.max_header = max_header
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header)
        self.deadline: float | None = None  # for the request being read, from its first byte

    async def _next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.deadline is None and self.h11.trailing_data[0]:
                self.deadline = trio.current_time() + self.request_timeout  # pipelined, partial
            if self.deadline is None:
                with trio.move_on_after(self.idle_timeout) as scope:
                    data = await self.stream.receive_some(READ_SIZE)
                if scope.cancelled_caught:
                    return h11.ConnectionClosed()
                self.deadline = trio.current_time() + self.request_timeout
            else:
                with trio.move_on_at(self.deadline) as scope:
                    data = await self.stream.receive_some(READ_SIZE)
                if scope.cancelled_caught:
                    raise _RequestTimeout
            self.h11.receive_data(bytes(data))  # a no-op on bytes (a socket's)

    async def run(self) -> None:
        try:
            while True:
                self.deadline = None
                try:
                    event = await self._next_event()
                    if not isinstance(event, h11.Request):
                        return
                    if _head_size(event) > self.max_header:  # it came whole, in one read
                        raise h11.RemoteProtocolError("head too large", error_status_hint=431)
                    body = await self._body(event)
                except _BodyTooLarge:
                    await self._refuse(413, f"body larger than {self.max_body} bytes")
                    return
                except _RequestTimeout:
                    await self._refuse(408, f"request not complete in {self.request_timeout:g} s")
                    return
                except h11.RemoteProtocolError as exc:
                    if exc.error_status_hint == 431:
                        await self._refuse(431, "request head too large")
                    else:
                        await self._refuse(400, f"bad request: {exc}")
                    return
                self.deadline = None
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

    async def _body(self, request: h11.Request) -> bytes:
        for name, value in request.headers.raw_items():
            if name.lower() == b"content-length" and int(value) > self.max_body:
                raise _BodyTooLarge  # h11 checked that it is a number
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
            "scheme": self.scheme,
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in request.headers.raw_items()],
            "client": self.client,
            "server": self.server,
            "extensions": self.extensions,
            "vxnet.peer_role": self.peer_role,
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

    async def _refuse(self, status: int, text: str) -> None:
        """Answer ``status``, then close cleanly: shut our end, drain theirs for ``LINGER`` s
        (over TLS the close that follows says the end: TLS has no half-close)."""
        await self._simple(status, text)
        if not isinstance(self.stream, trio.abc.HalfCloseableStream):
            return
        with trio.move_on_after(LINGER):
            try:
                await self.stream.send_eof()
                drained = 0
                while drained < LINGER_BYTES and (
                    data := await self.stream.receive_some(READ_SIZE)
                ):
                    drained += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

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


async def _busy(stream: trio.SocketStream, reason: str, *, plain: bool) -> None:
    """Answer a connection beyond the caps (503 over plain HTTP) and close it at once."""
    if plain:
        body = ('{"error": "busy: ' + reason.replace('"', "'") + '"}').encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"retry-after: 1\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        with (
            trio.move_on_after(LINGER),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
        ):
            await stream.send_all(head.encode() + body)
            await stream.send_eof()  # then read and drop what it sent, so it reads the answer
            drained = 0
            while drained < BUSY_DRAIN and (data := await stream.receive_some(READ_SIZE)):
                drained += len(data)
    await trio.aclose_forcefully(stream)


def _peer(stream: trio.SocketStream) -> tuple[str, int] | None:
    try:
        peer = stream.socket.getpeername()
        return (str(peer[0]), int(peer[1]))
    except (OSError, IndexError, TypeError, ValueError):
        return None


async def _handshake(
    stream: trio.SocketStream, context: TlsContext, client: tuple[str, int] | None
) -> tuple[TlsStream, dict[str, Any]] | None:
    """The TLS server handshake on ``stream`` (with the context in force now) within
    ``HANDSHAKE_TIMEOUT``: the TLS stream and what the scope says of it, or ``None`` (the
    connection closed) when it failed."""
    tls: TlsStream | None = None
    problem: str | None = None
    with trio.move_on_after(HANDSHAKE_TIMEOUT) as scope:
        try:
            tls = await tls_over(stream, context_now(context), server_side=True)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            problem = str(exc.__cause__ or exc) or type(exc).__name__
    if scope.cancelled_caught:
        problem = f"no TLS handshake within {HANDSHAKE_TIMEOUT:g} s"
    if tls is None or problem is not None:
        log.info("HTTPS client %s refused: %s", client, problem)
        await trio.aclose_forcefully(stream)
        return None
    der = tls.getpeercert(binary_form=True)
    about: dict[str, Any] = {
        "tls_version": 0x0304,  # TLS 1.3: the only version the contexts allow
        "client_cert_chain": [] if der is None else [ssl.DER_cert_to_PEM_cert(der)],
        "vxnet.peer_role": peer_role(der),
    }
    return tls, about


async def serve_asgi(
    app: App,
    host: str,
    port: int,
    *,
    max_body: int = MAX_BODY,
    max_header: int = MAX_HEADER,
    idle_timeout: float = IDLE_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
    tls: TlsContext | None = None,
    caps: ConnectionCaps | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; report the bound (host, port).

    ``caps`` (default: 128 per client address, and the total the descriptor limit allows) bounds
    the connections held.

    With ``tls``, every connection is HTTPS (the context decides whether a client certificate
    is required or optional, and which CA it must come from; a callable is asked for the context
    at each connection, so a certificate reloaded meanwhile serves the new ones).

    The bounds (``max_body``, ``max_header``, ``request_timeout``, ``idle_timeout``) are the
    module's.

    Raises:
        OSError: The address cannot be bound.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    server = (str(bound[0]), int(bound[1]))

    limits = ConnectionCaps() if caps is None else caps

    async def handle(stream: trio.SocketStream) -> None:
        client = _peer(stream)
        key = "?" if client is None else client[0]
        refusal = limits.admit(key)
        if refusal is not None:
            log.debug("HTTP connection from %s refused: %s", key, refusal)
            await _busy(stream, refusal, plain=tls is None)
            return
        try:
            served: trio.abc.Stream = stream
            about = None
            if tls is not None:
                accepted = await _handshake(stream, tls, client)
                if accepted is None:
                    return
                served, about = accepted
            conn = _Connection(
                app,
                served,
                server,
                max_body,
                max_header,
                idle_timeout,
                request_timeout,
                client,
                about,
            )
            await conn.run()
        finally:
            limits.release(key)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(server)


async def serve_asgi_unix(
    app: App,
    path: str,
    *,
    max_body: int = MAX_BODY,
    max_header: int = MAX_HEADER,
    idle_timeout: float = IDLE_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the unix socket ``path`` (created) until cancelled; report ``path``.

    Raises:
        OSError: The socket cannot be created (one exists already, say).
    """
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen()
    except OSError:
        sock.close()
        raise
    server: tuple[str, int | None] = (path, None)

    async def handle(stream: trio.SocketStream) -> None:
        conn = _Connection(
            app, stream, server, max_body, max_header, idle_timeout, request_timeout, None
        )
        await conn.run()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, [trio.SocketListener(sock)])
        task_status.started(path)


async def serve_api(
    app: App,
    listen: str,
    *,
    tls: TlsContext | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listen`` (host:port) until cancelled, HTTPS with ``tls``; report the
    bound URL.

    Raises:
        OSError: The address cannot be bound.
        ValueError: ``listen`` is not host:port.
    """
    from vxnet.config import parse_hostport

    host, port = parse_hostport(listen, any_port=True)
    scheme = "http" if tls is None else "https"
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve_asgi, app, host, port, tls=tls))
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        task_status.started(f"{scheme}://{shown}:{bound[1]}")
