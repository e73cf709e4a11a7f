"""The master's HTTP API (``/overlay-master/...``), shaped as dcos-mesos-modules' overlay.proto.

Routes:
  * ``POST /overlay-master/register`` ``{"ip", "networks"?, "mesos_bridge"?, "docker_bridge"?}``
    -> AgentInfo, once the allocation is in the replicated log (200; 201 when it was written).
  * ``GET /overlay-master/state`` -> ``{"network": NetworkConfig, "agents": [AgentInfo]}``, plus
    ``"free"``: used, free and total subnets per network and VTEP addresses. The allocator keeps
    each agent's JSON encoded, so a read re-encodes only the agents changed since the last one.
  * ``GET /overlay-master/network?after=<version>&wait=<s>`` -> ``{"version", "network"}``: the
    network configuration in force (the isolation policy in it) and its version (a digest, the
    same on every master); with ``after`` set to the version a client holds, the answer waits
    until the configuration changes (at most ``wait`` seconds, default 4, at most 25): agents
    long-poll it to apply a new policy within a second.
  * ``POST /overlay-master/agents/delete`` ``{"agents": ["<ip>"]}`` -> what was freed.
  * ``GET /overlay-master/leader`` -> who leads, and this master's view of the log.
  * ``GET /metrics`` -> Prometheus text.

A master that does not lead answers 307 with the leader's URL in ``Location`` (clients follow it);
one that cannot answer yet (no leader elected, catching up the log, a write of unknown fate)
answers 503 with ``Retry-After``. Malformed bodies and unknown fields get 400 with the reason;
with ``master.token`` set, register and delete need ``Authorization: Bearer <token>`` (401).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import math
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vxnet._json import JsonError, loads_bounded
from vxnet._metrics import by_label
from vxnet.master._allocator import agent_address_problem
from vxnet.master._service import AllocationFailed, MasterUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric
    from starlette.requests import Request

    from vxnet.master._service import MasterService

__all__ = ["BadRequest", "build_master_app"]

REGISTER_FIELDS = {"ip": str, "networks": list, "mesos_bridge": bool, "docker_bridge": bool}
MAX_BODY = 1024 * 1024
NETWORK_WAIT = 4.0  # seconds a GET /overlay-master/network?after= waits by default
MAX_NETWORK_WAIT = 25.0
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BadRequest(Exception):
    """A request the API refuses with 400; the text says what was wrong."""


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(f"body of {len(raw)} bytes exceeds {MAX_BODY}")
    try:
        body = loads_bounded(raw)
    except JsonError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _check_ip(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: {value!r} is not a string")
    canonical = _canonical_v4(value)
    if canonical is None:
        raise BadRequest(f"{where}: {value!r} is not an IPv4 address")
    return canonical


@functools.lru_cache(maxsize=4096)
def _canonical_v4(text: str) -> str | None:
    """``text`` as an IPv4 address in canonical form, or ``None``; cached (agents re-register)."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def parse_register(body: dict[str, Any], known_networks: list[str]) -> dict[str, Any]:
    """The register request's fields, checked.

    Raises:
        BadRequest: An unknown or missing field, a wrong type, an unknown network.
    """
    for key, value in body.items():
        kind = REGISTER_FIELDS.get(key)
        if kind is None:
            known = ", ".join(REGISTER_FIELDS)
            raise BadRequest(f"unknown field {key!r} (known: {known})")
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise BadRequest(f"{key}: expected {kind.__name__}, got {type(value).__name__}")
    if "ip" not in body:
        raise BadRequest("ip: missing (the agent's IPv4 address)")
    networks = body.get("networks")
    if networks is not None:
        for i, name in enumerate(networks):
            if not isinstance(name, str):
                raise BadRequest(f"networks[{i}]: {name!r} is not a string")
            if name not in known_networks:
                raise BadRequest(
                    f"networks[{i}]: unknown network {name!r} (known: {', '.join(known_networks)})"
                )
        if len(set(networks)) != len(networks):
            raise BadRequest("networks: a network is listed twice")
    ip = _check_ip(body["ip"], "ip")
    problem = agent_address_problem(ip)
    if problem is not None:
        raise BadRequest(f"ip: {problem}")
    return {
        "ip": ip,
        "networks": networks,
        "mesos_bridge": body.get("mesos_bridge", True),
        "docker_bridge": body.get("docker_bridge", True),
    }


class _Metrics:
    """Prometheus collector reading the master's counters when scraped."""

    def __init__(self, master: MasterService, requests: dict[str, int]) -> None:
        self.master = master
        self.requests = requests

    def collect(self) -> Iterator[Metric]:
        m = self.master
        yield by_label(
            CounterMetricFamily,
            "vxnet_master_register_requests",
            "Registration requests answered, by result.",
            "result",
            self.requests,
        )
        yield CounterMetricFamily(
            "vxnet_master_registrations",
            "Registrations applied that allocated or changed.",
            value=m.allocator.registrations,
        )
        yield by_label(
            CounterMetricFamily,
            "vxnet_master_allocation_failures",
            "Allocation failures applied from the log, by kind.",
            "kind",
            m.allocator.failures,
        )
        yield CounterMetricFamily(
            "vxnet_master_leader_changes",
            "Times this master saw a new log coordinator.",
            value=m.log.leader_changes,
        )
        yield GaugeMetricFamily(
            "vxnet_master_is_leader", "1 if this master leads.", value=float(m.log.is_leader())
        )
        yield GaugeMetricFamily(
            "vxnet_master_config_conflict",
            "1 if this master's [network] configuration was refused (see its log).",
            value=1.0 if m.config_conflict else 0.0,
        )
        yield GaugeMetricFamily(
            "vxnet_master_agents", "Agents holding allocations.", value=m.allocator.agent_count
        )
        free = {
            name: counts["free"]
            for name, counts in m.allocator.free_counts().items()
            if name != "vtep" and "free" in counts
        }
        yield by_label(
            GaugeMetricFamily,
            "vxnet_master_free_subnets",
            "Free agent subnets per network.",
            "network",
            free,
        )
        yield _latency_histogram(m.append_seconds)


def _latency_histogram(samples: list[float]) -> HistogramMetricFamily:
    buckets = []
    for bound in LATENCY_BUCKETS:
        buckets.append((repr(bound), float(sum(1 for s in samples if s <= bound))))
    buckets.append(("+Inf", float(len(samples))))
    hist = HistogramMetricFamily(
        "vxnet_master_log_append_seconds",
        "Latency of the master's appends to the replicated log (recent appends).",
    )
    hist.add_metric([], buckets, sum_value=math.fsum(samples))
    return hist


_WRITERS = ("agent", "operator")  # certificate roles that may register and delete agents
_READERS = ("master", "agent", "operator")


def build_master_app(master: MasterService) -> Starlette:
    """The Starlette application of ``master``'s API."""
    token = master.config.master.token
    tls_on = master.tls is not None
    open_reads = master.config.tls.open_reads
    requests: dict[str, int] = {}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Metrics(master, requests))

    def count(result: str) -> None:
        requests[result] = requests.get(result, 0) + 1

    def unauthorized(request: Request, *, write: bool = True) -> JSONResponse | None:
        """Why ``request`` may not go on (401 or 403), or None: with TLS, writes need an agent's
        or an operator's certificate and reads any cluster certificate (unless open_reads);
        writes also need the bearer token when one is set."""
        if tls_on and (write or not open_reads):
            role = request.scope.get("vxnet.peer_role")
            allowed = _WRITERS if write else _READERS
            if role not in allowed:
                count("forbidden")
                held = f"a certificate of role {role}" if role else "no certificate"
                needed = " or ".join(allowed)
                return _error(403, f"this client presented {held}; this needs role {needed}")
        if token is None or not write:
            return None
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token):
            return None
        response = _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        response.headers["WWW-Authenticate"] = 'Bearer realm="vxnet-master"'
        return response

    def unavailable(request: Request, exc: MasterUnavailable) -> Response:
        if exc.leader is not None:
            location = exc.leader + request.url.path
            response = _error(307, str(exc), leader=exc.leader)
            response.headers["Location"] = location
            return response
        response = _error(503, str(exc))
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return response

    async def register(request: Request) -> Response:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        try:
            known = [o.name for o in master.allocator.network.overlays]
            fields = parse_register(await _body(request), known)
        except BadRequest as exc:
            count("bad_request")
            return _error(400, str(exc))
        try:
            info, written = await master.register(
                fields["ip"],
                fields["networks"],
                mesos_bridge=fields["mesos_bridge"],
                docker_bridge=fields["docker_bridge"],
            )
        except MasterUnavailable as exc:
            count("redirected" if exc.leader else "unavailable")
            return unavailable(request, exc)
        except AllocationFailed as exc:
            count("failed")
            return _error(409, str(exc))
        count("allocated" if written else "unchanged")
        return JSONResponse(info.to_json(), status_code=201 if written else 200)

    async def delete(request: Request) -> Response:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        try:
            body = await _body(request)
            unknown = sorted(set(body) - {"agents"})
            if unknown:
                raise BadRequest(f"unknown field {unknown[0]!r} (known: agents)")
            agents = body.get("agents")
            if not isinstance(agents, list) or not agents:
                raise BadRequest("agents: expected a non-empty list of agent IPs")
            ips = [_check_ip(a, f"agents[{i}]") for i, a in enumerate(agents)]
        except BadRequest as exc:
            return _error(400, str(exc))
        try:
            master.ensure_leading()
            held = [ip for ip in ips if master.allocator.agent_info(ip) is not None]
            await master.delete(ips)
        except MasterUnavailable as exc:
            return unavailable(request, exc)
        return JSONResponse(
            {"deleted": held, "unknown": [ip for ip in ips if ip not in held]},
        )

    async def state(request: Request) -> Response:
        denied = unauthorized(request, write=False)
        if denied is not None:
            return denied
        try:
            master.ensure_leading()
        except MasterUnavailable as exc:
            return unavailable(request, exc)
        # Each agent's JSON is kept encoded by the allocator: a read joins the pieces.
        return Response(master.allocator.state_json(free=True), media_type="application/json")

    async def network(request: Request) -> Response:
        denied = unauthorized(request, write=False)
        if denied is not None:
            return denied
        after = request.query_params.get("after")
        try:
            wait = float(request.query_params.get("wait", NETWORK_WAIT))
        except ValueError:
            return _error(400, "wait: seconds, a number")
        if not 0 <= wait <= MAX_NETWORK_WAIT or (after is not None and len(after) > 64):
            return _error(400, f"wait: 0 to {MAX_NETWORK_WAIT} seconds; after: a version")
        with trio.move_on_after(wait):
            while True:
                changed = master.network_changed
                try:
                    master.ensure_leading()
                except MasterUnavailable as exc:
                    return unavailable(request, exc)
                version, _ = master.network_view()
                if version != after:
                    break
                await changed.wait()
        try:
            master.ensure_leading()
        except MasterUnavailable as exc:
            return unavailable(request, exc)
        version, body = master.network_view()
        return JSONResponse({"version": version, "network": body})

    async def leader(request: Request) -> Response:
        denied = unauthorized(request, write=False)
        if denied is not None:
            return denied
        core = master.log.replica
        return JSONResponse(
            {
                "leader": master.leader_url(),
                "is_leader": master.log.is_leader(),
                "ready": core is not None and core.leading and master.network_in_log,
                "log": master.log.info() if core is not None else None,
                "config_conflict": master.config_conflict,
            }
        )

    async def metrics(request: Request) -> Response:
        denied = unauthorized(request, write=False)
        if denied is not None:
            return denied
        return Response(
            generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return Starlette(
        routes=[
            Route("/overlay-master/register", register, methods=["POST"]),
            Route("/overlay-master/state", state, methods=["GET"]),
            Route("/overlay-master/network", network, methods=["GET"]),
            Route("/overlay-master/agents/delete", delete, methods=["POST"]),
            Route("/overlay-master/leader", leader, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
