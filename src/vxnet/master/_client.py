"""A client of the masters' HTTP API that finds the leader and rides out failovers.

``async with open_master_client(["198.18.0.1:61080", ...], token=...) as masters:
info = await masters.register("198.18.0.11")``.

The client keeps one keep-alive HTTP/1.1 connection (plain trio streams: no proxies, no
environment) to the master it believes leads. It follows a 307 to the leader, sending the bearer
token again (general HTTP clients drop it on a redirect to another host); on 503 it waits as
``Retry-After`` says (at most ``max_wait``) and asks again; when a master does not answer it moves
on to the next one. All of that within ``patience`` seconds per call. A refusal (400, 401, 409)
raises :class:`MasterRefused` at once, with the master's reason.
"""

from __future__ import annotations

import json
import random
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

__all__ = ["MasterClient", "MasterRefused", "MasterUnreachable", "open_master_client"]

REQUEST_TIMEOUT = 5.0
MAX_ANSWER = 64 * 1024 * 1024


class MasterRefused(Exception):
    """A master refused the request (``status`` 4xx); the message is its reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class MasterUnreachable(Exception):
    """No master answered the request in time."""


class _Broken(Exception):
    pass


class _Connection:
    def __init__(self, address: tuple[str, int], stream: trio.SocketStream) -> None:
        self.address = address
        self.stream = stream
        self.buf = bytearray()

    async def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        host = f"{self.address[0]}:{self.address[1]}"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: application/json"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        await self.stream.send_all("\r\n".join(lines).encode() + b"\r\n\r\n" + (body or b""))
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise _Broken(f"not an HTTP answer: {status_line[:80]!r}")
        answer_headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            answer_headers[name.strip().lower()] = value.strip()
        if "chunked" in answer_headers.get("transfer-encoding", ""):
            raise _Broken("chunked answers are not expected from a master")
        length = int(answer_headers.get("content-length", "0"))
        if length > MAX_ANSWER:
            raise _Broken(f"answer of {length} bytes")
        self.buf = bytearray(rest)
        while len(self.buf) < length:
            await self._fill()
        data = bytes(self.buf[:length])
        del self.buf[:length]
        return int(parts[1]), answer_headers, data

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise _Broken("the master closed the connection")
        self.buf += data


def _parse_address(text: str) -> tuple[str, int]:
    from vxnet.config import parse_hostport

    text = text.removeprefix("http://").split("/", 1)[0]
    return parse_hostport(text)


class MasterClient:
    """Talks to the leading master; use :func:`open_master_client`."""

    def __init__(
        self,
        masters: Sequence[str],
        *,
        token: str | None = None,
        patience: float = 30.0,
        max_wait: float = 1.0,
    ) -> None:
        if not masters:
            raise ValueError("no master addresses")
        self.masters = [_parse_address(m) for m in masters]
        self.token = token
        self.patience = patience
        self.max_wait = max_wait
        self._next = random.randrange(len(self.masters))  # spread clients over the masters
        self._target: tuple[str, int] | None = None
        self._conn: _Connection | None = None
        self._lock = trio.Lock()

    async def register(
        self,
        ip: str,
        networks: Sequence[str] | None = None,
        *,
        mesos_bridge: bool = True,
        docker_bridge: bool = True,
    ) -> dict[str, Any]:
        """The agent's AgentInfo, once the masters have it in their log."""
        body: dict[str, Any] = {"ip": ip, "mesos_bridge": mesos_bridge}
        body["docker_bridge"] = docker_bridge
        if networks is not None:
            body["networks"] = list(networks)
        return await self.call("POST", "/overlay-master/register", body)

    async def state(self) -> dict[str, Any]:
        return await self.call("GET", "/overlay-master/state")

    async def delete(self, ips: Sequence[str]) -> dict[str, Any]:
        return await self.call("POST", "/overlay-master/agents/delete", {"agents": list(ips)})

    async def call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        """One request to the leader, redirected and retried as the module says.

        Raises:
            MasterRefused: A master refused it (4xx).
            MasterUnreachable: No master answered in ``patience`` seconds.
        """
        data = None if body is None else json.dumps(body).encode()
        headers = {} if self.token is None else {"Authorization": f"Bearer {self.token}"}
        last = "no master answered"
        async with self._lock:
            with trio.move_on_after(self.patience):
                wait = 0.05
                while True:
                    conn = await self._connection()
                    if conn is None:
                        last = "no master accepts connections"
                        await trio.sleep(wait)
                        wait = min(wait * 2, self.max_wait)
                        continue
                    try:
                        with trio.fail_after(REQUEST_TIMEOUT):
                            status, answer_headers, answer = await conn.request(
                                method, path, data, headers
                            )
                    except (OSError, trio.BrokenResourceError, trio.TooSlowError, _Broken) as exc:
                        last = f"{conn.address[0]}:{conn.address[1]}: {exc or 'no answer'}"
                        await self._drop()
                        continue
                    if answer_headers.get("connection", "").lower() == "close":
                        await self._drop()
                    text = answer.decode("utf-8", "replace")
                    if 200 <= status < 300:
                        result = json.loads(answer)
                        if not isinstance(result, dict):
                            raise MasterRefused(status, f"unexpected answer {text[:200]!r}")
                        return result
                    if status == 307 and "location" in answer_headers:
                        await self._drop()
                        self._target = _parse_address(answer_headers["location"])
                        continue
                    if status == 503:
                        last = _reason(text)
                        retry = float(answer_headers.get("retry-after", "1") or 1)
                        await trio.sleep(min(retry, self.max_wait) * (0.5 + random.random() / 2))
                        continue
                    raise MasterRefused(status, _reason(text))
        raise MasterUnreachable(f"{method} {path}: nothing in {self.patience:g} s: {last}")

    async def _connection(self) -> _Connection | None:
        if self._conn is not None:
            return self._conn
        for _ in range(len(self.masters)):
            address = self._target
            if address is None:
                address = self.masters[self._next % len(self.masters)]
                self._next += 1
            self._target = None
            try:
                with trio.fail_after(1.0):
                    stream = await trio.open_tcp_stream(*address)
            except (OSError, trio.TooSlowError):
                continue
            self._conn = _Connection(address, stream)
            return self._conn
        return None

    async def _drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await trio.aclose_forcefully(conn.stream)

    async def aclose(self) -> None:
        await self._drop()


def _reason(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return text[:200]


@asynccontextmanager
async def open_master_client(
    masters: Sequence[str],
    *,
    token: str | None = None,
    patience: float = 30.0,
    max_wait: float = 1.0,
) -> AsyncIterator[MasterClient]:
    """A :class:`MasterClient`, its connection closed on the way out."""
    client = MasterClient(masters, token=token, patience=patience, max_wait=max_wait)
    try:
        yield client
    finally:
        await client.aclose()
