"""A client of the masters' HTTP API that finds the leader and rides out failovers.

``async with open_master_client(["198.18.0.1:61080", ...], token=...) as masters:
info = await masters.register("198.18.0.11")``.

The client keeps one keep-alive HTTP/1.1 connection (:class:`vxnet.http.HttpClient`: no proxies,
no environment, bounded answers) to the master it believes leads. It follows a 307 to the
leader, sending the bearer token again (general HTTP clients drop it on a redirect to another
host); on 503 it waits as ``Retry-After`` says (at most ``max_wait``) and asks again; when a
master does not answer it moves on to the next one. All of that within ``patience`` seconds per
call. A refusal (400, 401, 403, 409) raises :class:`MasterRefused` at once, with the master's
reason. With ``tls`` (the process's :class:`vxnet.pki.Tls`) it speaks HTTPS, presenting its own
certificate and accepting only a master's certificate from the cluster CA that names the address
dialled.
"""

from __future__ import annotations

import json
import random
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from vxnet.http import HttpClient, HttpConnectError, HttpError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from vxnet.pki import Tls

__all__ = ["MasterClient", "MasterRefused", "MasterUnreachable", "open_master_client"]

REQUEST_TIMEOUT = 5.0
CONNECT_TIMEOUT = 1.0
MAX_ANSWER = 64 * 1024 * 1024


class MasterRefused(Exception):
    """A master refused the request (``status`` 4xx); the message is its reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class MasterUnreachable(Exception):
    """No master answered the request in time."""


def _parse_address(text: str) -> tuple[str, int]:
    from vxnet.config import parse_hostport

    text = text.removeprefix("http://").removeprefix("https://").split("/", 1)[0]
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
        tls: Tls | None = None,
    ) -> None:
        if not masters:
            raise ValueError("no master addresses")
        self.masters = [_parse_address(m) for m in masters]
        self.token = token
        self.patience = patience
        self.max_wait = max_wait
        self.scheme = "http" if tls is None else "https"
        self._next = random.randrange(len(self.masters))  # spread clients over the masters
        self._target: tuple[str, int] | None = None  # where a redirect points
        self._current: tuple[str, int] | None = None  # the master it talks to
        self._http = HttpClient(
            timeout=REQUEST_TIMEOUT,
            connect_timeout=CONNECT_TIMEOUT,
            max_body_bytes=MAX_ANSWER,
            max_idle=1,
            tls=None if tls is None else (lambda: tls.client),  # read per connection: reloads take
            server_role=None if tls is None else "master",
        )
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
        headers = [("Accept", "application/json")]
        if self.token is not None:
            headers.append(("Authorization", f"Bearer {self.token}"))
        if data is not None:
            headers.append(("Content-Type", "application/json"))
        last = "no master answered"
        async with self._lock:
            with trio.move_on_after(self.patience):
                wait = 0.05
                refused = 0  # masters in a row that accepted no connection
                while True:
                    address = self._address()
                    try:
                        response = await self._http.request(
                            method, self._url(address, path), body=data, headers=headers
                        )
                    except HttpConnectError as exc:
                        await self._drop()
                        refused += 1
                        last = f"{address[0]}:{address[1]}: {exc.reason}"
                        if refused >= len(self.masters):
                            refused = 0
                            await trio.sleep(wait)
                            wait = min(wait * 2, self.max_wait)
                        continue
                    except HttpError as exc:
                        last = f"{address[0]}:{address[1]}: {exc.reason}"
                        await self._drop()
                        continue
                    refused = 0
                    if (response.header("connection") or "").lower() == "close":
                        await self._drop()
                    status = response.status
                    text = response.body.decode("utf-8", "replace")
                    if 200 <= status < 300:
                        try:
                            result = response.json()
                        except ValueError:
                            result = None
                        if not isinstance(result, dict):
                            raise MasterRefused(status, f"unexpected answer {text[:200]!r}")
                        return result
                    location = response.header("location")
                    if status == 307 and location is not None:
                        await self._drop()
                        self._target = _parse_address(location)
                        continue
                    if status == 503:
                        last = _reason(text)
                        await trio.sleep(
                            min(_retry_after(response.header("retry-after")), self.max_wait)
                            * (0.5 + random.random() / 2)
                        )
                        continue
                    raise MasterRefused(status, _reason(text))
        raise MasterUnreachable(f"{method} {path}: nothing in {self.patience:g} s: {last}")

    def _address(self) -> tuple[str, int]:
        """The master to ask: the current one, else where a redirect pointed, else the next."""
        if self._current is None:
            if self._target is not None:
                self._current, self._target = self._target, None
            else:
                self._current = self.masters[self._next % len(self.masters)]
                self._next += 1
        return self._current

    async def _drop(self) -> None:
        """Hang up on the current master; the next request goes to another one."""
        if self._current is not None:
            address, self._current = self._current, None
            await self._http.close_idle(*address)

    async def aclose(self) -> None:
        self._current = None
        await self._http.aclose()

    def _url(self, address: tuple[str, int], path: str) -> str:
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        return f"{self.scheme}://{host}:{address[1]}{path}"


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value or 1))
    except ValueError:
        return 1.0


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
    tls: Tls | None = None,
) -> AsyncIterator[MasterClient]:
    """A :class:`MasterClient`, its connection closed on the way out."""
    client = MasterClient(masters, token=token, patience=patience, max_wait=max_wait, tls=tls)
    try:
        yield client
    finally:
        await client.aclose()
