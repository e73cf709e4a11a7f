"""A small client of the Docker Engine API over its unix socket, on :class:`vxnet.http.HttpClient`.

The agent asks Docker for little: whether it runs, its networks (to create the overlay's bridge
network), its containers and their events (to publish task records). This client speaks exactly
that, API version 1.41 (Docker 20.10).

Every call opens a new connection to the socket, sends one HTTP/1.1 request (``Host: docker``,
``Connection: close``, a JSON or tar body with its Content-Length), reads the whole response
(Content-Length or chunked, at most ``MAX_ANSWER`` bytes) and closes: the daemon is local and a
call is rare, so no connection pool (and nothing to close when a ``Docker`` is dropped). A call
takes at most ``timeout`` seconds, except :meth:`Docker.events`, whose response never ends: it
yields each event as its line arrives and closes the connection when the iteration is cancelled
or closed.

Failures raise :class:`DockerError`, whose message names the call, the socket and Docker's own
``message``; :class:`DockerUnavailable` (a subclass) when nothing answers on the socket.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from vxnet.http import HttpClient, HttpConnectError, HttpError, HttpTimeout

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Container, Mapping, Sequence

__all__ = ["API_VERSION", "DEFAULT_SOCKET", "Docker", "DockerError", "DockerUnavailable"]

API_VERSION = "v1.41"
DEFAULT_SOCKET = "/var/run/docker.sock"
MAX_ANSWER = 256 * 1024 * 1024  # an answer read whole (image imports report their progress)
MAX_EVENT = 1024 * 1024  # one line of the event stream


class DockerError(Exception):
    """A Docker API call failed; ``status`` is the HTTP status, ``None`` if no response came."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DockerUnavailable(DockerError):
    """Nothing answers on the Docker socket: the daemon is not running or not installed."""


def _lines(buffer: bytearray, data: bytes) -> list[dict[str, Any]]:
    """Append ``data`` and take the complete JSON lines out of ``buffer``."""
    buffer += data
    *lines, rest = buffer.split(b"\n")
    buffer[:] = rest
    return [json.loads(line) for line in lines if line.strip()]


class Docker:
    """The Docker Engine API on ``socket_path``; each call takes at most ``timeout`` seconds."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, *, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._http = HttpClient(
            unix_socket=socket_path,
            timeout=timeout,
            connect_timeout=timeout,
            max_body_bytes=MAX_ANSWER,
            keep_alive=False,
        )

    def __repr__(self) -> str:
        return f"Docker({self.socket_path!r})"

    # --- the one request helper -----------------------------------------------------------------

    def _url(self, path: str, query: Mapping[str, Any] | None) -> str:
        return f"http://docker/{API_VERSION}{path}" + (f"?{urlencode(query)}" if query else "")

    def _failure(self, method: str, path: str, exc: HttpError) -> DockerError:
        """The DockerError for a failed exchange: unavailable if nothing answered at all."""
        where = f"Docker {method} {path}"
        if isinstance(exc, HttpConnectError):
            return DockerUnavailable(
                f"{where}: {exc.reason} to {self.socket_path}: "
                "Docker is not running or not installed"
            )
        if isinstance(exc, HttpTimeout):
            return DockerUnavailable(
                f"{where}: no answer on {self.socket_path} within {self.timeout:g} s; "
                "is the daemon hung?"
            )
        return DockerError(f"{where}: response from {self.socket_path} broke off: {exc.reason}")

    def _error(self, method: str, path: str, status: int, body: bytes) -> DockerError:
        try:
            message = str(json.loads(body)["message"])
        except (ValueError, KeyError, TypeError):
            message = body.decode(errors="replace").strip() or "(no message)"
        return DockerError(
            f"Docker {method} {path} on {self.socket_path}: HTTP {status}: {message}", status
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        ctype: str = "application/json",
        allow: Container[int] = (),
    ) -> tuple[int, bytes]:
        """One call: its status and body. Statuses from 400 up raise unless in ``allow``.

        Raises:
            DockerUnavailable: Nothing answers on the socket (or not within ``timeout``).
            DockerError: Docker answered with an error, or the connection broke.
        """
        if json_body is not None:
            data = json.dumps(json_body).encode()
        headers: Sequence[tuple[str, str]] = () if data is None else [("Content-Type", ctype)]
        try:
            response = await self._http.request(
                method, self._url(path, query), body=data, headers=headers
            )
        except HttpError as exc:
            raise self._failure(method, path, exc) from exc
        if response.status >= 400 and response.status not in allow:
            raise self._error(method, path, response.status, response.body)
        return response.status, response.body

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        _, body = await self._call(method, path, **kwargs)
        return json.loads(body)

    # --- the daemon -----------------------------------------------------------------------------

    async def ping(self) -> str:
        """``"OK"`` when the daemon answers."""
        _, body = await self._call("GET", "/_ping")
        return body.decode()

    async def version(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/version"))

    # --- networks -------------------------------------------------------------------------------

    async def network(self, name: str) -> dict[str, Any] | None:
        """The network called (or with the ID) ``name``, ``None`` if there is none."""
        status, body = await self._call("GET", f"/networks/{quote(name, safe='')}", allow=(404,))
        return None if status == 404 else dict(json.loads(body))

    async def networks(self) -> list[dict[str, Any]]:
        return list(await self._json("GET", "/networks"))

    async def create_network(self, spec: Mapping[str, Any]) -> str:
        """Create a network from ``spec`` (``Name``, ``Driver``, ``IPAM``...); its ID."""
        return str((await self._json("POST", "/networks/create", json_body=spec))["Id"])

    async def remove_network(self, name_or_id: str) -> None:
        """Remove a network; one that does not exist is no error."""
        await self._call("DELETE", f"/networks/{quote(name_or_id, safe='')}", allow=(404,))

    async def connect_network(self, network: str, container: str) -> None:
        path = f"/networks/{quote(network, safe='')}/connect"
        await self._call("POST", path, json_body={"Container": container})

    # --- containers -----------------------------------------------------------------------------

    async def container(self, id: str) -> dict[str, Any] | None:
        """The inspection of a container (by ID or name), ``None`` if there is none."""
        path = f"/containers/{quote(id, safe='')}/json"
        status, body = await self._call("GET", path, allow=(404,))
        return None if status == 404 else dict(json.loads(body))

    async def containers(
        self, all: bool = False, filters: Mapping[str, list[str]] | None = None
    ) -> list[dict[str, Any]]:
        """Running containers (every one with ``all``), narrowed by Docker's ``filters``."""
        query = {"all": "1" if all else "0"}
        if filters:
            query["filters"] = json.dumps(filters)
        return list(await self._json("GET", "/containers/json", query=query))

    async def create_container(self, spec: Mapping[str, Any], name: str | None = None) -> str:
        """Create a container from ``spec`` (``Image``, ``Cmd``, ``HostConfig``...); its ID."""
        query = {"name": name} if name else None
        created = await self._json("POST", "/containers/create", query=query, json_body=spec)
        return str(created["Id"])

    async def start_container(self, id: str) -> None:
        await self._call("POST", f"/containers/{quote(id, safe='')}/start", allow=(304,))

    async def stop_container(self, id: str, timeout: int = 1) -> None:  # noqa: ASYNC109
        """Stop a container: SIGTERM, then SIGKILL after Docker waited ``timeout`` seconds."""
        path = f"/containers/{quote(id, safe='')}/stop"
        await self._call("POST", path, query={"t": str(timeout)}, allow=(304,))

    async def remove_container(self, id: str, force: bool = True) -> None:
        """Remove a container (killing it with ``force``); one that does not exist is no error."""
        path = f"/containers/{quote(id, safe='')}"
        await self._call("DELETE", path, query={"force": "1" if force else "0"}, allow=(404,))

    # --- images ---------------------------------------------------------------------------------

    async def image(self, name: str) -> dict[str, Any] | None:
        """The inspection of an image (``repo:tag`` or ID), ``None`` if there is none."""
        status, body = await self._call(
            "GET", f"/images/{quote(name, safe=':')}/json", allow=(404,)
        )
        return None if status == 404 else dict(json.loads(body))

    async def import_image(self, tar_bytes: bytes, repo: str, tag: str = "latest") -> None:
        """Import a root filesystem tar as image ``repo:tag``.

        Raises:
            DockerError: Docker refused it, or reported an error in its progress stream.
        """
        query = {"fromSrc": "-", "repo": repo, "tag": tag}
        _, body = await self._call(
            "POST", "/images/create", query=query, data=tar_bytes, ctype="application/x-tar"
        )
        for line in _lines(bytearray(), body + b"\n"):
            if "error" in line:
                raise DockerError(
                    f"Docker POST /images/create ({repo}:{tag}) on {self.socket_path}: "
                    f"{line['error']}"
                )

    # --- events ---------------------------------------------------------------------------------

    async def events(
        self, filters: Mapping[str, list[str]] | None = None, *, since: float | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Docker's events, each as soon as it arrives; the iteration never ends by itself.

        Events from ``since`` (a Unix time) on that Docker still holds come first: a subscriber
        that starts by waiting for one of them knows it misses nothing that follows.
        Close the iteration (``contextlib.aclosing``) or cancel it to close the connection.

        Raises:
            DockerUnavailable: Nothing answers on the socket.
            DockerError: Docker refused the filters, or the stream broke off.
        """
        query = {"filters": json.dumps(filters)} if filters else {}
        if since is not None:
            query["since"] = f"{since:.6f}"
        try:
            async with self._http.stream("GET", self._url("/events", query)) as response:
                if response.status >= 400:
                    raise self._error("GET", "/events", response.status, await response.read())
                buffer = bytearray()
                while (chunk := await response.receive()) is not None:
                    for event in _lines(buffer, chunk):
                        yield event
                    if len(buffer) > MAX_EVENT:
                        raise DockerError(
                            f"Docker GET /events on {self.socket_path}: an event longer than "
                            f"{MAX_EVENT} bytes"
                        )
        except HttpError as exc:
            raise self._failure("GET", "/events", exc) from exc
        raise DockerError(f"Docker GET /events on {self.socket_path}: the daemon ended the stream")
