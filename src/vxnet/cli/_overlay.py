"""``vxnet overlay status|usage``: a running agent's overlay, and address usage cluster-wide."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, add_command, add_group, print_table
from vxnet.cli._common import add_agent_api, api_url, fetch, ip_order, printed_as_json

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


def _overlay_status(args: argparse.Namespace) -> int:
    status = fetch("overlay status", f"{api_url(args.api)}/overlay-agent/status")
    done = printed_as_json(status, args.json)
    if done is not None:
        return done
    from vxnet.records import AgentInfo, RecordError

    registration = status.get("registration", {})
    if status.get("info") is None:
        error = registration.get("last_error") or "no master has answered yet"
        print(f"agent {status['agent_ip']}: not registered yet ({error})")
        return Exit.FAILED
    try:
        info = AgentInfo.from_json(status["info"], "info")
    except RecordError as exc:
        print(f"vxnet overlay status: the agent answered a bad AgentInfo: {exc}", file=sys.stderr)
        return Exit.FAILED
    vxlan = info.vxlan()
    vtep = "- -" if vxlan is None else f"{vxlan.vtep_ip} {vxlan.vtep_ip6 or ''} {vxlan.vtep_mac}"
    print(
        f"agent {status['agent_ip']}: allocation from {registration.get('source')}; "
        f"{status['vtep']} {vtep}".replace("  ", " ")
    )
    if registration.get("last_error"):
        print(f"last registration error: {registration['last_error']}")
    for warning in status.get("security_warnings", []):
        print(f"WARNING: {warning}")
    rows = []
    for o in info.overlays:
        ok = o.ok
        status_text = o.state.status.label
        rows.append(
            (
                o.name,
                "OK" if ok else f"{status_text}: {o.state.error or ''}",
                " ".join(o.subnets()) or "-",
                o.mesos_bridge.name if ok and o.mesos_bridge is not None else "-",
                o.docker_bridge.name if ok and o.docker_bridge is not None else "-",
            )
        )
    print_table(("NETWORK", "STATUS", "SUBNETS", "CNI BRIDGE", "DOCKER BRIDGE"), rows)
    nat = "off"
    if status.get("egress_nat"):
        nat = "on" if status.get("nat_programmed") else "on, NOT programmed (see the agent's log)"
    isolation = status.get("isolation")
    if isolation is None:
        print("isolation: the masters' policy not heard yet")
    elif not isolation.get("on"):
        print(
            f"isolation: off (policy {isolation.get('version')}): every network reaches every other"
        )
    else:
        pairs = ", ".join(
            f"{a['from']} -> {a['to']}" + (f" ({' '.join(a['ports'])})" if a["ports"] else "")
            for a in isolation.get("allow", [])
        )
        state = "ok" if isolation.get("programmed") else "NOT programmed (see the agent's log)"
        print(
            f"isolation: on (policy {isolation.get('version')}), {state}; "
            f"allowed: {pairs or 'none'}"
        )
    counters = status.get("counters", {})
    docker = status.get("docker", {})
    if docker.get("enabled"):
        state = "answering" if docker.get("available") else "NOT answering"
        print(f"Docker: on, {state} on {docker.get('socket')}")
    else:
        print("Docker: off")
    print(
        f"egress NAT: {nat}; CNI configuration in {status.get('cni_dir')}; "
        f"remote agents: {len(status.get('remotes', []))}; "
        + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counters.items())
    )
    for error in status.get("last_errors", []):
        print(f"recent netlink error: {error}")
    for key, problem in sorted(status.get("bad_records", {}).items()):
        print(f"ignored record {key}: {problem}")
    if status.get("kernel_error"):
        print(f"cannot read the kernel: {status['kernel_error']}")
        return Exit.FAILED
    objects = status.get("objects", [])
    print()
    print_table(
        ("KIND", "OBJECT", "STATE"), [(o["kind"], o["object"], o["state"]) for o in objects]
    )
    wrong = sum(o["state"] != "ok" for o in objects)
    print()
    print(
        f"{len(objects)} kernel objects, "
        + (
            f"{wrong} not as desired (repaired at the next reconcile)"
            if wrong
            else "all as desired"
        )
    )
    return Exit.OK


def _overlay_usage(args: argparse.Namespace) -> int:
    import json

    from vxnet.records import USAGE_PREFIX, RecordError, UsageRecord

    answer = fetch("overlay usage", f"{api_url(args.api)}/v1/store?prefix={USAGE_PREFIX}&live=1")
    if answer is None:
        return Exit.FAILED
    records = answer.get("records", [])
    rows = []
    low = []
    for record in sorted(records, key=lambda r: ip_order(r["key"].removeprefix(USAGE_PREFIX))):
        agent = record["key"].removeprefix(USAGE_PREFIX)
        try:
            usage = UsageRecord.from_json(record["value"], record["key"])
        except RecordError as exc:
            print(f"ignored record {record['key']}: {exc}", file=sys.stderr)
            continue
        for network, halves in sorted(usage.networks.items()):
            for half, c in sorted(halves.items()):
                for suffix, total, used, free in c.families():
                    share = used / total if total else 1.0
                    flag = "LOW" if free < max(1, total // 10) else ""
                    name = f"{half}{' IPv6' if suffix else ''}"
                    rows.append((agent, network, name, str(used), str(free), f"{share:.0%}", flag))
                    if flag:
                        low.append(f"{agent} {network} {name}: {free} free of {total}")
    if args.json:
        by_agent = {r["key"].removeprefix(USAGE_PREFIX): r["value"] for r in records}
        print(json.dumps(by_agent, indent=2))
        return Exit.OK
    print_table(("AGENT", "NETWORK", "HALF", "ALLOCATED", "FREE", "USED", ""), rows)
    if low:
        print()
        print(f"{len(low)} close to exhaustion (under 10 % free):")
        for line in low:
            print(f"  {line}")
    return Exit.OK


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    overlay_cmds = add_group(commands, "overlay", "inspect a running agent's overlay")
    ostatus = add_command(
        overlay_cmds,
        "status",
        _overlay_status,
        "the agent's allocation and its kernel objects against the desired state",
        description="Print the agent's allocation (VTEP, subnets per network), egress NAT, "
        "counters, and every route, neighbour and FDB entry vxnet owns with whether it "
        "matches the desired state.",
        json=True,
    )
    add_agent_api(ostatus)
    ousage = add_command(
        overlay_cmds,
        "usage",
        _overlay_usage,
        "container addresses allocated and free on every agent, cluster-wide",
        description="Print, for every live agent, network and half (cni, docker), how many "
        "container addresses are allocated and free, and which agents are close to exhaustion.",
        json=True,
    )
    add_agent_api(ousage)
