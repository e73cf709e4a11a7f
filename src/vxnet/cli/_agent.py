"""``vxnet agent`` (run one), and what a running agent knows: ``members``, ``store``, ``tasks``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, add_command, print_table
from vxnet.cli._common import add_agent_api, add_daemon_options, api_url, fetch, run_daemon

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


def _agent(args: argparse.Namespace) -> int:
    from vxnet.agent import run_agent
    from vxnet.overlay._ipam import IpamError

    return run_daemon(
        "vxnet agent", args, "agent", run_agent, bad_input=(ValueError,), failed=(IpamError,)
    )


def _members(args: argparse.Namespace) -> int:
    import json

    data = fetch("members", f"{api_url(args.api)}/v1/members")
    if data is None:
        return Exit.FAILED
    members = data.get("members", []) if isinstance(data, dict) else []
    if args.json:
        print(json.dumps(members, indent=2))
        return Exit.OK
    rows = [
        (
            m["name"],
            f"{m['addr']}:{m['port']}",
            m["status"],
            ",".join(f"{k}={v}" for k, v in sorted(m.get("tags", {}).items())),
        )
        for m in members
    ]
    print_table(HEADER, rows)
    return Exit.OK


HEADER = ("NAME", "ADDRESS", "STATUS", "TAGS")


def _store(args: argparse.Namespace) -> int:
    import json
    from urllib.parse import quote

    from vxnet.http import ApiError, fetch_json

    base = api_url(args.api) + "/v1/store"
    try:
        if args.action == "ls":
            live = "&live=1" if args.live else ""
            records = fetch_json(f"{base}?prefix={quote(args.key)}{live}").get("records", [])
            if args.json:
                print(json.dumps(records, indent=2))
            for r in [] if args.json else records:
                print(f"{r['key']}\t{r['owner']}\t{json.dumps(r['value'], sort_keys=True)}")
        elif args.action == "get":
            print(json.dumps(fetch_json(f"{base}/{quote(args.key, safe='')}"), indent=2))
        elif args.action == "put":
            try:
                value = json.loads(args.value)
            except ValueError as exc:
                print(f"vxnet store put: VALUE is not JSON: {exc}", file=sys.stderr)
                return Exit.BAD_INPUT
            fetch_json(f"{base}/{quote(args.key, safe='')}", method="PUT", body=value)
        else:
            fetch_json(f"{base}/{quote(args.key, safe='')}", method="DELETE")
    except ApiError as exc:
        print(f"vxnet store {args.action}: {exc}", file=sys.stderr)
        return Exit.BAD_INPUT if "HTTP 4" in str(exc) else Exit.FAILED
    return Exit.OK


def _tasks(args: argparse.Namespace) -> int:
    import json

    answer = fetch("tasks", f"{api_url(args.api)}/v1/tasks")
    if answer is None:
        return Exit.FAILED
    records = answer.get("tasks", [])
    if args.json:
        print(json.dumps([r["value"] for r in records], indent=2))
        return Exit.OK
    from vxnet.records import RecordError, TaskRecord

    tasks = []
    for record in records:
        try:
            tasks.append(TaskRecord.from_json(record["value"]))
        except RecordError as exc:
            print(f"ignored record {record.get('key')}: {exc}", file=sys.stderr)
    tasks.sort(key=lambda t: (t.framework, t.name, t.ip or ""))
    rows = [
        (
            t.name,
            t.framework,
            t.network or "",
            " ".join(x for x in (t.ip, t.ip6) if x) or "-",
            t.agent_ip,
            t.runtime or "",
            "yes" if t.ports_mapped else "no",
        )
        for t in tasks
    ]
    print_table(("NAME", "FRAMEWORK", "NETWORK", "ADDRESSES", "AGENT", "RUNTIME", "PORTS"), rows)
    return Exit.OK


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    agent = add_command(
        commands,
        "agent",
        _agent,
        "run an agent",
        description="Run a vxnet agent: gossip membership (Serf compatible) and the agent's "
        "HTTP API. SIGINT or SIGTERM makes it leave the cluster gracefully.",
    )
    add_daemon_options(agent, "agent")
    members = add_command(
        commands,
        "members",
        _members,
        "list the cluster's members as a running agent sees them",
        description="List members (name, address, status, tags) from a running agent's API.",
        json=True,
    )
    add_agent_api(members)
    store = add_command(
        commands,
        "store",
        _store,
        "read and write the replicated store through a running agent",
        description="Read and write the replicated store through a running agent's API.",
    )
    add_agent_api(store)
    store_cmds = store.add_subparsers(
        title="store commands", dest="action", metavar="ACTION", required=True
    )
    ls = store_cmds.add_parser("ls", help="list records under a prefix")
    ls.add_argument("key", metavar="PREFIX", nargs="?", default="")
    ls.add_argument("--live", action="store_true", help="hide records of owners that are down")
    ls.add_argument("--json", action="store_true", help="print JSON")
    get = store_cmds.add_parser("get", help="print one record (JSON)")
    get.add_argument("key", metavar="KEY")
    put = store_cmds.add_parser("put", help="write a record owned by that agent")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", help="a JSON object")
    delete = store_cmds.add_parser("delete", help="delete a record")
    delete.add_argument("key", metavar="KEY")
    tasks = add_command(
        commands,
        "tasks",
        _tasks,
        "list the cluster's tasks (containers with their names and addresses)",
        description="List every live task record of the cluster, as a running agent sees it.",
        json=True,
    )
    add_agent_api(tasks)
