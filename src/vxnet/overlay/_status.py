"""What ``GET /overlay-agent/status`` shows (sans-IO): the allocation, the registration, the
kernel against the desired state, NAT, CNI files and the reconcile counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vxnet.overlay._diff import compare
from vxnet.overlay._model import desired_state

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vxnet.config import AgentConfig
    from vxnet.overlay._dockernet import DockerNetworks
    from vxnet.overlay._isolation import Policy
    from vxnet.overlay._model import KernelState, RemoteAgent
    from vxnet.overlay._reconcile import Reconciler
    from vxnet.overlay._registration import Registration
    from vxnet.records import AgentInfo

__all__ = ["overlay_status"]


def overlay_status(
    *,
    agent_ip: str,
    config: AgentConfig,
    registration: Registration,
    info: AgentInfo | None,
    vtep: str,
    docker: DockerNetworks | None,
    reconciler: Reconciler,
    repairs: int,
    kernel_events: int,
    bad_records: dict[str, str],
    remotes: Sequence[RemoteAgent],
    actual: KernelState | str | None,
    policy: Policy | None = None,
    policy_version: str | None = None,
) -> dict[str, Any]:
    """The status document; ``actual`` is what the kernel holds on the VTEP (a string: the
    error reading it; ``None``: not read, before an allocation)."""
    out: dict[str, Any] = {
        "agent_ip": agent_ip,
        "registration": {
            "source": registration.source,
            "attempts": registration.attempts,
            "failures": registration.failures,
            "last_error": registration.last_error,
        },
        "info": None if info is None else info.to_json(),
        "vtep": vtep,
        "egress_nat": config.agent.egress_nat,
        "docker": {
            "enabled": docker is not None,
            "socket": config.agent.docker_socket,
            "available": docker is not None and docker.available,
        },
        "nat_programmed": reconciler.nat_programmed,
        "isolation": None
        if policy is None
        else {
            "version": policy_version,
            "on": policy.isolation,
            "allow": [{"from": a.source, "to": a.to, "ports": list(a.ports)} for a in policy.allow],
            "programmed": reconciler.isolation_programmed,
        },
        "cni_dir": config.agent.cni_dir,
        "counters": {
            "reconciles": reconciler.reconciles,
            "repairs": repairs,
            "kernel_events": kernel_events,
            "netlink_errors": reconciler.netlink_errors,
            "local_errors": reconciler.local_errors,
        },
        "last_errors": reconciler.last_errors,
        "bad_records": bad_records,
        "remotes": [r.ip for r in sorted(remotes, key=lambda r: r.ip)],
        "security_warnings": config.security_warnings(),
        "objects": [],
    }
    if isinstance(actual, str):
        out["kernel_error"] = actual
    elif actual is not None:
        out["objects"] = compare(desired_state(remotes, vtep), actual)
    return out
