"""The HTTP API that agents (and masters) serve, and its client for the ``vxnet`` command.

Routes (JSON):
  * ``GET /v1/members``: every member this node knows, with address, status and tags.

The app is a Starlette application served by hypercorn on trio, bound to a loopback address by
default (``agent.listen``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request

__all__ = ["ApiError", "build_app", "fetch_json", "serve_api"]


class ApiError(Exception):
    """The API of a running node could not be reached or answered badly."""


def build_app(members: Callable[[], list[dict[str, Any]]]) -> Starlette:
    """The application; ``members`` returns the current member list as JSON-able dicts."""

    async def get_members(request: Request) -> JSONResponse:
        return JSONResponse({"members": members()})

    return Starlette(routes=[Route("/v1/members", get_members)])


async def serve_api(
    app: Starlette,
    listen: str,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listen`` (host:port) until cancelled; report the bound URL."""
    config = HypercornConfig()
    config.bind = [listen]
    config.accesslog = None
    config.loglevel = "WARNING"

    async def started(binds: list[str]) -> None:
        task_status.started(binds[0])

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(hypercorn_serve, app, config)
        await started(binds)


def fetch_json(url: str, *, timeout: float = 5.0) -> Any:
    """GET ``url`` and decode its JSON.

    Raises:
        ApiError: No answer, an HTTP error, or not JSON (the message says which, and where).
    """
    import httpx

    try:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
        return response.json()
    except httpx.HTTPStatusError as exc:
        raise ApiError(f"{url}: HTTP {exc.response.status_code}") from exc
    except httpx.HTTPError as exc:
        raise ApiError(f"{url}: {exc or type(exc).__name__} (is the agent running?)") from exc
    except ValueError as exc:
        raise ApiError(f"{url}: the answer is not JSON") from exc
