"""The HTTP API that agents (and masters) serve, and its client for the ``vxnet`` command.

Routes (JSON):
  * ``GET /v1/members``: every member this node knows, with address, status and tags.
  * ``GET /v1/store?prefix=P[&live=1]``: the replicated store's records under ``P``, with their
    owners and versions (``live=1`` hides the records of owners that are down).
  * ``GET /v1/store/KEY``, ``PUT /v1/store/KEY`` (a JSON object), ``DELETE /v1/store/KEY``.
  * ``GET /overlay-agent/overlay``: the agent's AgentInfo, as the masters allocated it (503 until
    the agent has an allocation; 404 when the agent runs without the overlay).
  * ``GET /overlay-agent/status``: AgentInfo plus registration, every owned kernel object against
    the desired state, egress NAT, CNI directory and counters (``vxnet overlay status``).
  * ``GET /v1/tasks``: every live task record of the cluster; ``POST /v1/tasks`` registers a task
    of a runtime that has no CNI or Docker hook (``{"id", "name", "network", "ip"/"ip6",
    "framework"?, "ports_mapped"?}``); ``DELETE /v1/tasks/ID`` deregisters it.
  * ``GET /v1/records``: every DNS record this agent serves (name, type, value, TTL).
  * ``GET /v1/keys``: every member's gossip keys (Serf's list-keys query); ``POST /v1/keys``
    ``{"op": "install"|"use"|"remove", "key"}`` changes them on every member (``serf keys``).
    Both only from a loopback address: the answer holds the keys.
  * ``GET /metrics``: Prometheus text (address usage, IPAM requests, reconciles, errors).

The app is a Starlette application served by :func:`vxnet.http.serve_api` (h11 on trio), bound to
a loopback address by default (``agent.listen``).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vxnet._json import JsonError, loads_bounded
from vxnet.records import TASK_PREFIX

if TYPE_CHECKING:
    from starlette.requests import Request

    from vxnet.dns._server import DnsService
    from vxnet.gossip import GossipService
    from vxnet.overlay._service import OverlayService

__all__ = ["build_app"]


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(
    node: GossipService, overlay: OverlayService | None = None, dns: DnsService | None = None
) -> Starlette:
    """The application serving ``node``'s members and store, ``overlay`` and ``dns`` if given."""

    def no_overlay() -> JSONResponse:
        return JSONResponse(
            {"error": "this agent runs without the overlay (agent.overlay = false)"},
            status_code=404,
        )

    async def overlay_info(request: Request) -> JSONResponse:
        if overlay is None:
            return no_overlay()
        if overlay.info is None:
            error = overlay.registration.last_error or "no master has answered yet"
            return JSONResponse(
                {"error": f"not registered yet: {error}"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse({**overlay.info.to_json(), "usage": overlay.containers.usage()})

    async def overlay_status(request: Request) -> JSONResponse:
        if overlay is None:
            return no_overlay()
        return JSONResponse(await overlay.status())

    async def tasks(request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse({"tasks": node.records(TASK_PREFIX, live=True)})
        if overlay is None:
            return no_overlay()
        from vxnet.overlay._containers import TaskError, task_from_api

        try:
            body = loads_bounded(await request.body())
        except JsonError as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        try:
            task_id, record = task_from_api(body, overlay.agent_ip)
            overlay.containers.put_api_task(task_id, record)
        except TaskError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except OSError as exc:
            return JSONResponse({"error": f"cannot keep the task: {exc}"}, status_code=500)
        return JSONResponse({"id": task_id, **record}, status_code=201)

    async def one_task(request: Request) -> JSONResponse:
        if overlay is None:
            return no_overlay()
        task_id = request.path_params["id"]
        try:
            dropped = overlay.containers.drop_api_task(task_id)
        except OSError as exc:
            return JSONResponse({"error": f"cannot drop the task: {exc}"}, status_code=500)
        if not dropped:
            return JSONResponse(
                {"error": f"no task {task_id!r} registered through this agent's API"},
                status_code=404,
            )
        return JSONResponse({"deleted": task_id})

    async def records(request: Request) -> JSONResponse:
        if dns is None:
            return JSONResponse(
                {"error": "this agent runs without DNS (dns.enabled = false)"}, status_code=404
            )
        return JSONResponse({"zone": dns.settings.suffix, "records": dns.zone.records()})

    async def metrics(request: Request) -> Response:
        from vxnet.agent._metrics import render

        body, content_type = render(node, overlay, dns)
        return Response(body, media_type=content_type)

    async def keys(request: Request) -> JSONResponse:
        client = request.client.host if request.client is not None else ""
        if not _loopback(client):
            return JSONResponse(
                {"error": f"gossip keys are served to loopback clients only, not {client}"},
                status_code=403,
            )
        op, key = "list", None
        if request.method == "POST":
            try:
                body = loads_bounded(await request.body())
            except JsonError as exc:
                return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
            if not isinstance(body, dict) or set(body) != {"op", "key"}:
                return JSONResponse(
                    {"error": 'the body must be {"op": "install"|"use"|"remove", "key": KEY}'},
                    status_code=400,
                )
            op, key = body["op"], body["key"]
            if op not in ("install", "use", "remove") or not isinstance(key, str):
                return JSONResponse(
                    {"error": "op must be install, use or remove, and key a string"},
                    status_code=400,
                )
        try:
            return JSONResponse(await node.key_query(op, key))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def get_members(request: Request) -> JSONResponse:
        return JSONResponse({"members": node.members()})

    async def list_store(request: Request) -> JSONResponse:
        prefix = request.query_params.get("prefix", "")
        live = request.query_params.get("live", "") in ("1", "true", "yes")
        return JSONResponse({"records": node.records(prefix, live=live)})

    async def one_record(request: Request) -> JSONResponse:
        key = request.path_params["key"]
        if request.method == "GET":
            found = [r for r in node.records(key) if r["key"] == key]
            if not found:
                return JSONResponse({"error": f"no record {key!r}"}, status_code=404)
            return JSONResponse(found[0])
        if request.method == "DELETE":
            if not node.delete(key):
                return JSONResponse({"error": f"no record {key!r}"}, status_code=404)
            return JSONResponse({"deleted": key})
        try:
            value = loads_bounded(await request.body())
        except JsonError as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        if not isinstance(value, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        try:
            node.put(key, value)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"key": key, "value": value})

    return Starlette(
        routes=[
            Route("/v1/members", get_members),
            Route("/v1/store", list_store),
            Route("/v1/store/{key:path}", one_record, methods=["GET", "PUT", "DELETE"]),
            Route("/overlay-agent/overlay", overlay_info),
            Route("/overlay-agent/status", overlay_status),
            Route("/v1/tasks", tasks, methods=["GET", "POST"]),
            Route("/v1/tasks/{id}", one_task, methods=["DELETE"]),
            Route("/v1/records", records),
            Route("/v1/keys", keys, methods=["GET", "POST"]),
            Route("/metrics", metrics),
        ]
    )
