"""The one HTTP/1.1 client of vxnet: h11 on trio, over TCP or a unix socket, bounded.

``async with HttpClient() as http: response = await http.request("GET", "http://host:port/x")``.
``HttpClient(unix_socket="/var/run/docker.sock")`` sends every request to that socket instead
(the URL's host is only the ``Host`` header, as Docker's ``http://docker/...``).
``HttpClient(tls=context, server_role="master")`` also speaks ``https://``: the server's
certificate must come from the context's CA, name the host dialled (an IP address or DNS name in
its subject alternative names) and, with ``server_role``, carry that vxnet role. ``tls`` may be a
callable answering the context in force (``lambda: tls.client`` of a :class:`vxnet.pki.Tls`),
asked at each new connection, so that a reloaded certificate is the one new connections present.

Rules:

- A request is sent with its whole body (``Content-Length``) and its answer read whole into an
  :class:`HttpResponse`; :meth:`HttpClient.stream` hands out the head and then the body piece by
  piece as it arrives (Docker's ``/events`` never ends).
- Bounds: the response head at most ``max_header_bytes``, a body read whole at most
  ``max_body_bytes`` (refused at once when ``Content-Length`` says more), and a whole exchange
  (connect, send, head, and a body read whole) within ``timeout`` seconds; connecting alone within
  ``connect_timeout``. A streamed body has no deadline: its reader decides how long to wait.
- Keep-alive: a connection whose exchange ended cleanly goes back to a pool (at most
  ``max_idle`` per destination) and the next request to the same place reuses it. A pooled
  connection the server has closed meanwhile fails before any answer arrives: the request is then
  sent again on the next (a new connection at the latest). ``keep_alive=False`` sends
  ``Connection: close`` and pools nothing (for callers that never close the client).
- Errors are :class:`HttpError`\\s whose message says what went wrong and where (method, URL,
  and the socket when it is one): :class:`HttpConnectError` (nothing accepts the connection),
  :class:`HttpTimeout` (the deadline passed), :class:`HttpTooLarge` (a bound was exceeded) and
  :class:`HttpProtocolError` (the server broke HTTP: a bad head, a bad ``Content-Length``, a body
  cut short, the connection closed before an answer). ``reason`` is the message without the where.
  An HTTP status is no error: the caller reads ``status``.

:func:`fetch_json` is the synchronous client of the ``vxnet`` command (and of tests): one request,
redirects followed, the JSON answer or :class:`ApiError`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urljoin, urlsplit

import h11
import trio

from vxnet.pki import context_now, peer_role, tls_over

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from vxnet.pki import TlsContext

__all__ = [
    "ApiError",
    "HttpClient",
    "HttpConnectError",
    "HttpError",
    "HttpProtocolError",
    "HttpResponse",
    "HttpStream",
    "HttpTimeout",
    "HttpTooLarge",
    "fetch_json",
]

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
MAX_IDLE = 8
READ_SIZE = 65536
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5

Headers: TypeAlias = tuple[tuple[str, str], ...]
_Destination: TypeAlias = tuple[str, int, bool] | str  # (host, port, TLS) or a unix socket


class HttpError(Exception):
    """An HTTP exchange failed; the message says what and where, ``reason`` only what."""

    def __init__(self, method: str, url: str, where: str | None, reason: str) -> None:
        via = f" via {where}" if where else ""
        super().__init__(f"{method} {url}{via}: {reason}")
        self.method = method
        self.url = url
        self.reason = reason


class HttpConnectError(HttpError):
    """Nothing accepted the connection (refused, no such socket, unreachable, too slow)."""


class HttpTimeout(HttpError):
    """The exchange did not end within its deadline."""


class HttpProtocolError(HttpError):
    """The server broke HTTP/1.1: a bad head or length, a body cut short, no answer at all."""


class HttpTooLarge(HttpProtocolError):
    """The response head or body exceeded the client's bound."""


class ApiError(Exception):
    """The API of a running node could not be reached or answered badly (:func:`fetch_json`)."""


def _tls_alert(exc: BaseException) -> str | None:
    """What a TLS alert from the server said, when ``exc`` is one (not a plain close)."""
    cause = exc.__cause__
    if not isinstance(cause, ssl.SSLError) or isinstance(
        cause, ssl.SSLEOFError | ssl.SSLZeroReturnError
    ):
        return None
    return f"the server refused the TLS connection ({cause.reason or cause})"


def _tls_hint(target: _Target) -> str:
    """Why a TLS server may close on us unanswered: TLS 1.3 clients finish their handshake
    before the server has judged their certificate."""
    secure = not isinstance(target.destination, str) and target.destination[2]
    return " (over TLS: it may refuse this client's certificate)" if secure else ""


class _Closed(Exception):
    """The server closed the connection before any byte of an answer (maybe a stale one)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A whole answer: status, headers (names in lower case) and body."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: str, default: str | None = None) -> str | None:
        """The last value of header ``name`` (any case), or ``default``."""
        name = name.lower()
        found = default
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    def json(self) -> Any:
        """The body decoded as JSON.

        Raises:
            ValueError: It is not JSON.
        """
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class _Target:
    method: str
    url: str
    destination: _Destination
    where: str | None  # the unix socket, for messages
    host: str  # the Host header
    path: str  # the request target


def _header(headers: Headers, name: str) -> str | None:
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


class _Connection:
    def __init__(self, destination: _Destination, stream: trio.abc.Stream, max_head: int) -> None:
        self.destination = destination
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)
        self.reused = False

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class HttpStream:
    """An answer whose body is read as it arrives; from :meth:`HttpClient.stream`."""

    def __init__(
        self,
        client: HttpClient,
        conn: _Connection,
        target: _Target,
        status: int,
        headers: Headers,
    ) -> None:
        self.status = status
        self.headers = headers
        self._client = client
        self._conn: _Connection | None = conn
        self._target = target
        self._ended = False

    def header(self, name: str, default: str | None = None) -> str | None:
        """The last value of header ``name`` (any case), or ``default``."""
        found = _header(self.headers, name.lower())
        return default if found is None else found

    async def receive(self) -> bytes | None:
        """The next piece of the body as it arrives; ``None`` at its end.

        Raises:
            HttpProtocolError: The body broke off or is malformed.
        """
        conn = self._conn
        if conn is None or self._ended:
            return None
        while True:
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._error(HttpProtocolError, f"bad response body: {exc}") from exc
            if isinstance(event, h11.Data):
                return bytes(event.data)
            if isinstance(event, h11.EndOfMessage):
                self._ended = True
                return None
            if isinstance(event, h11.ConnectionClosed):
                raise self._error(HttpProtocolError, "the connection closed inside the body")
            if event is h11.NEED_DATA:
                try:
                    data = bytes(await conn.stream.receive_some(READ_SIZE))
                except (OSError, trio.BrokenResourceError) as exc:
                    raise self._error(
                        HttpProtocolError, f"the connection broke inside the body: {exc}"
                    ) from exc
                conn.h11.receive_data(data)

    async def read(self, limit: int | None = None) -> bytes:
        """The rest of the body, at most ``limit`` bytes (the client's ``max_body_bytes``).

        Raises:
            HttpTooLarge: The body is longer.
            HttpProtocolError: The body broke off or is malformed.
        """
        limit = self._client.max_body_bytes if limit is None else limit
        chunks: list[bytes] = []
        size = 0
        while (chunk := await self.receive()) is not None:
            size += len(chunk)
            if size > limit:
                raise self._error(HttpTooLarge, f"response body larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _error(self, kind: type[HttpError], reason: str) -> HttpError:
        return kind(self._target.method, self._target.url, self._target.where, reason)

    async def aclose(self) -> None:
        """Give the connection back to the pool if the body ended cleanly, else close it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._client._release(conn, clean=self._ended)


class HttpClient:
    """HTTP/1.1 requests with a keep-alive pool; the module says the rules.

    Close it (``async with`` or :meth:`aclose`) to close the pooled connections.
    """

    def __init__(
        self,
        *,
        unix_socket: str | None = None,
        timeout: float = TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_idle: int = MAX_IDLE,
        keep_alive: bool = True,
        tls: TlsContext | None = None,
        server_role: str | None = None,
    ) -> None:
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive")
        if max_header_bytes <= 0 or max_body_bytes < 0 or max_idle < 0:
            raise ValueError("max_header_bytes must be positive, max_body_bytes and max_idle >= 0")
        self.unix_socket = unix_socket
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.max_idle = max_idle if keep_alive else 0
        self.keep_alive = keep_alive
        self.tls = tls
        self.server_role = server_role
        self._idle: dict[_Destination, list[_Connection]] = {}
        self._closed = False

    def __repr__(self) -> str:
        via = f"unix_socket={self.unix_socket!r}, " if self.unix_socket else ""
        return f"HttpClient({via}timeout={self.timeout:g})"

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection; the client can still be used afterwards."""
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.aclose()

    async def close_idle(self, host: str, port: int) -> None:
        """Close the pooled connections to ``host:port`` (a peer believed gone)."""
        for secure in (False, True):
            for conn in self._idle.pop((host, port, secure), []):
                await conn.aclose()

    # --- requests --------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        timeout: float | None = None,  # noqa: ASYNC109 (its expiry is an HttpTimeout)
    ) -> HttpResponse:
        """Send one request and read its whole answer, within ``timeout`` (the client's).

        Raises:
            HttpConnectError, HttpTimeout, HttpTooLarge, HttpProtocolError: As the module says.
            ValueError: ``url`` is not an ``http://`` URL, or a header is not valid.
        """
        target = self._target(method, url)
        limit = self.timeout if timeout is None else timeout
        with trio.move_on_after(limit) as scope:
            stream = await self._open(target, body, headers)
            try:
                data = await stream.read()
            finally:
                await stream.aclose()
            return HttpResponse(stream.status, stream.headers, data)
        assert scope.cancelled_caught
        raise HttpTimeout(method, url, target.where, f"no complete answer within {limit:g} s")

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        timeout: float | None = None,  # noqa: ASYNC109 (its expiry is an HttpTimeout)
    ) -> AsyncIterator[HttpStream]:
        """Send one request; yield its answer once the head arrived (within ``timeout``).

        The body is read from the :class:`HttpStream` as it arrives, with no deadline; leaving
        the block before its end closes the connection.

        Raises:
            HttpConnectError, HttpTimeout, HttpTooLarge, HttpProtocolError: As the module says.
            ValueError: ``url`` is not an ``http://`` URL, or a header is not valid.
        """
        target = self._target(method, url)
        limit = self.timeout if timeout is None else timeout
        opened: HttpStream | None = None
        with trio.move_on_after(limit):
            opened = await self._open(target, body, headers)
        if opened is None:
            raise HttpTimeout(method, url, target.where, f"no answer within {limit:g} s")
        try:
            yield opened
        finally:
            await opened.aclose()

    # --- the exchange ----------------------------------------------------------------------------

    def _target(self, method: str, url: str) -> _Target:
        parts = urlsplit(url)
        secure = parts.scheme == "https" and self.tls is not None and self.unix_socket is None
        if parts.scheme == "https" and self.tls is None:
            raise ValueError(
                f"{url!r}: only http:// URLs without TLS settings "
                "(https:// needs a CA and a certificate)"
            )
        if not (parts.scheme == "http" or secure) or not parts.hostname:
            supported = "http:// or https://" if self.tls is not None else "http://"
            raise ValueError(f"{url!r}: only {supported}host[:port]/path URLs are supported")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if self.unix_socket is not None:
            destination: _Destination = self.unix_socket
        else:
            destination = (parts.hostname, parts.port or (443 if secure else 80), secure)
        return _Target(method, url, destination, self.unix_socket, parts.netloc, path)

    async def _open(
        self,
        target: _Target,
        body: bytes | None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]],
    ) -> HttpStream:
        """Send the request and read the answer's head, on a pooled or a new connection."""
        fields = [("Host", target.host)]
        fields += list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if body is not None:
            fields.append(("Content-Length", str(len(body))))
        if not self.keep_alive:
            fields.append(("Connection", "close"))
        try:
            request = h11.Request(method=target.method, target=target.path, headers=fields)
        except h11.LocalProtocolError as exc:  # a header with a newline in it, say
            raise ValueError(f"{target.method} {target.url}: not a valid request: {exc}") from exc
        while True:
            conn = await self._connection(target)
            try:
                return await self._exchange(conn, target, request, body)
            except _Closed:
                await conn.aclose()
                if conn.reused:
                    continue  # the server closed it while it was idle: once more on a new one
                raise HttpProtocolError(
                    target.method,
                    target.url,
                    target.where,
                    f"the server closed the connection without answering{_tls_hint(target)}",
                ) from None
            except BaseException:
                await conn.aclose()
                raise

    async def _connection(self, target: _Target) -> _Connection:
        idle = self._idle.get(target.destination)
        if idle:
            conn = idle.pop()
            conn.reused = True
            return conn
        destination = target.destination
        try:
            with trio.fail_after(self.connect_timeout):
                if isinstance(destination, str):
                    stream: trio.abc.Stream = await trio.open_unix_socket(destination)
                else:
                    host, port, secure = destination
                    tcp = await trio.open_tcp_stream(host, port)
                    stream = await self._handshake(tcp, host, target) if secure else tcp
        except trio.TooSlowError:
            raise HttpConnectError(
                target.method,
                target.url,
                target.where,
                f"no connection within {self.connect_timeout:g} s",
            ) from None
        except OSError as exc:
            raise HttpConnectError(
                target.method,
                target.url,
                target.where,
                f"cannot connect ({exc.strerror or exc})",
            ) from exc
        return _Connection(destination, stream, self.max_header_bytes)

    async def _handshake(
        self, tcp: trio.SocketStream, host: str, target: _Target
    ) -> trio.abc.Stream:
        """TLS on ``tcp`` to ``host``, the server's certificate checked (and its role).

        Raises:
            HttpConnectError: The handshake failed, or the certificate has another role.
        """
        assert self.tls is not None
        try:
            context = context_now(self.tls)
            stream = await tls_over(tcp, context, server_side=False, server_hostname=host)
        except (trio.BrokenResourceError, OSError) as exc:
            await trio.aclose_forcefully(tcp)
            reason = str(exc.__cause__ or exc) or type(exc).__name__
            raise HttpConnectError(
                target.method, target.url, target.where, f"TLS handshake failed ({reason})"
            ) from exc
        if self.server_role is not None:
            role = peer_role(stream.getpeercert(binary_form=True))
            if role != self.server_role:
                await trio.aclose_forcefully(stream)
                raise HttpConnectError(
                    target.method,
                    target.url,
                    target.where,
                    f"the server's certificate is a {role or 'role-less'} certificate, "
                    f"not a {self.server_role}'s",
                )
        return stream

    async def _exchange(
        self, conn: _Connection, target: _Target, request: h11.Request, body: bytes | None
    ) -> HttpStream:
        def error(kind: type[HttpError], reason: str) -> HttpError:
            return kind(target.method, target.url, target.where, reason)

        data = conn.h11.send(request)
        if body:
            data += conn.h11.send(h11.Data(data=body))
        data += conn.h11.send(h11.EndOfMessage())
        try:
            await conn.stream.send_all(data)
        except (OSError, trio.BrokenResourceError) as exc:
            refusal = _tls_alert(exc)
            if refusal is not None:
                raise error(HttpConnectError, refusal) from exc
            if conn.reused:
                raise _Closed from exc
            reason = f"the connection broke while sending: {exc}{_tls_hint(target)}"
            raise error(HttpProtocolError, reason) from exc
        answered = False
        while True:
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:
                    reason = f"response head larger than {self.max_header_bytes} bytes"
                    raise error(HttpTooLarge, reason) from exc
                raise error(HttpProtocolError, f"bad response: {exc}") from exc
            if event is h11.NEED_DATA:
                try:
                    data = bytes(await conn.stream.receive_some(READ_SIZE))
                except (OSError, trio.BrokenResourceError) as exc:
                    refusal = _tls_alert(exc)
                    if refusal is not None:  # TLS 1.3: a refused certificate shows only now
                        raise error(HttpConnectError, refusal) from exc
                    if not answered:
                        raise _Closed from exc
                    raise error(HttpProtocolError, f"the connection broke: {exc}") from exc
                if not data and not answered:
                    raise _Closed
                answered = True
                conn.h11.receive_data(data)
            elif isinstance(event, h11.Response):
                headers = tuple(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in event.headers
                )
                size = len(event.reason) + 15 + sum(len(n) + len(v) + 4 for n, v in headers)
                if size > self.max_header_bytes:  # it came whole, in one read
                    reason = f"response head larger than {self.max_header_bytes} bytes"
                    raise error(HttpTooLarge, reason)
                length = _header(headers, "content-length")
                if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                    reason = f"response body of {length} bytes, more than {self.max_body_bytes}"
                    raise error(HttpTooLarge, reason)
                return HttpStream(self, conn, target, event.status_code, headers)
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed
            # an InformationalResponse (100 Continue): the real answer follows

    async def _release(self, conn: _Connection, *, clean: bool) -> None:
        reusable = (
            clean
            and conn.h11.our_state is h11.DONE
            and conn.h11.their_state is h11.DONE
            and len(self._idle.get(conn.destination, ())) < self.max_idle
        )
        if not reusable:
            await conn.aclose()
            return
        conn.h11.start_next_cycle()
        self._idle.setdefault(conn.destination, []).append(conn)


# --- the vxnet command's client ------------------------------------------------------------------


def fetch_json(
    url: str,
    *,
    method: str = "GET",
    body: Any = None,
    timeout: float = 5.0,
    tls: TlsContext | None = None,
    server_role: str | None = None,
) -> Any:
    """Send a request to ``url`` (redirects followed) and decode the JSON answer; ``https://``
    with ``tls`` (the server's certificate of role ``server_role``, when given).

    Blocking: for the ``vxnet`` command and tests, not for a trio task.

    Raises:
        ApiError: No answer, an HTTP error, or not JSON (the message says which, and where).
    """
    client = HttpClient(
        timeout=timeout,
        connect_timeout=timeout,
        keep_alive=False,
        tls=tls,
        server_role=server_role,
    )
    return trio.run(_fetch_json, client, url, method, body, timeout)


def _down_hint(url: str) -> str:
    return f" (is the {'master' if '/overlay-master/' in url else 'agent'} running?)"


async def _fetch_json(http: HttpClient, url: str, method: str, body: Any, seconds: float) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = [("Accept", "application/json")]
    if data is not None:
        headers.append(("Content-Type", "application/json"))
    start = url
    try:
        async with http:
            with trio.fail_after(seconds):
                for _ in range(MAX_REDIRECTS + 1):
                    response = await http.request(method, url, body=data, headers=headers)
                    location = response.header("location")
                    if response.status not in REDIRECTS or location is None:
                        break
                    url = urljoin(url, location)
                    if response.status == 303:
                        method, data = "GET", None
    except HttpError as exc:
        hint = "" if "TLS" in exc.reason else _down_hint(start)  # a TLS refusal says enough
        raise ApiError(f"{start}: {exc.reason}{hint}") from exc
    except trio.TooSlowError:
        raise ApiError(f"{start}: no answer within {seconds:g} s{_down_hint(start)}") from None
    except ValueError as exc:  # a redirect to somewhere that is not http:// (or https://)
        raise ApiError(f"{start}: {exc}") from exc
    if response.status >= 400:
        try:
            answer = response.json()
            detail = answer.get("error", "") if isinstance(answer, dict) else ""
        except ValueError:
            detail = ""
        suffix = f": {detail}" if detail else ""
        raise ApiError(f"{start}: HTTP {response.status}{suffix}")
    try:
        return response.json()
    except ValueError as exc:
        raise ApiError(f"{start}: the answer is not JSON") from exc
