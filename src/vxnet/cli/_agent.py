"""``vxnet agent`` (run one), and what a running agent knows: ``members``, ``store``, ``tasks``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from vxnet._console import print_table
from vxnet.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    add_agent_api,
    api_url,
    daemon_config,
    fetch,
    run_unwrapped,
)

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


def _agent(args: argparse.Namespace) -> int:

    from vxnet.agent import run_agent

    config = daemon_config(args.config, "agent", args.verbose)
    if config is None:
        return EXIT_BAD_INPUT
    from vxnet.overlay._ipam import IpamError

    try:
        run_unwrapped(run_agent, config)
    except (OSError, IpamError) as exc:
        print(f"vxnet agent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:
        print(f"vxnet agent: {args.config}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _members(args: argparse.Namespace) -> int:
    import json

    data = fetch("members", f"{api_url(args.api)}/v1/members")
    if data is None:
        return EXIT_FAILED
    members = data.get("members", []) if isinstance(data, dict) else []
    if args.json:
        print(json.dumps(members, indent=2))
        return EXIT_OK
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
    return EXIT_OK


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
                return EXIT_BAD_INPUT
            fetch_json(f"{base}/{quote(args.key, safe='')}", method="PUT", body=value)
        else:
            fetch_json(f"{base}/{quote(args.key, safe='')}", method="DELETE")
    except ApiError as exc:
        print(f"vxnet store {args.action}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if "HTTP 4" in str(exc) else EXIT_FAILED
    return EXIT_OK


def _tasks(args: argparse.Namespace) -> int:
    import json

    answer = fetch("tasks", f"{api_url(args.api)}/v1/tasks")
    if answer is None:
        return EXIT_FAILED
    records = answer.get("tasks", [])
    tasks = [r["value"] for r in records]
    if args.json:
        print(json.dumps(tasks, indent=2))
        return EXIT_OK
    rows = [
        (
            str(t.get("name", "")),
            str(t.get("framework", "")),
            str(t.get("network", "")),
            " ".join(x for x in (t.get("ip"), t.get("ip6")) if x) or "-",
            str(t.get("agent_ip", "")),
            str(t.get("runtime", "")),
            "yes" if t.get("ports_mapped") else "no",
        )
        for t in sorted(
            tasks, key=lambda t: (str(t.get("framework")), str(t.get("name")), str(t.get("ip")))
        )
    ]
    print_table(("NAME", "FRAMEWORK", "NETWORK", "ADDRESSES", "AGENT", "RUNTIME", "PORTS"), rows)
    return EXIT_OK


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    agent = commands.add_parser(
        "agent",
        help="run an agent",
        description="Run a vxnet agent: gossip membership (Serf compatible) and the agent's "
        "HTTP API. SIGINT or SIGTERM makes it leave the cluster gracefully.",
    )
    agent.add_argument("--config", "-c", required=True, metavar="FILE", help="agent TOML file")
    agent.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    agent.set_defaults(func=_agent)

    members = commands.add_parser(
        "members",
        help="list the cluster's members as a running agent sees them",
        description="List members (name, address, status, tags) from a running agent's API.",
    )
    add_agent_api(members)
    members.add_argument("--json", action="store_true", help="print JSON")
    members.set_defaults(func=_members)

    store = commands.add_parser(
        "store",
        help="read and write the replicated store through a running agent",
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
    store.set_defaults(func=_store)

    tasks = commands.add_parser(
        "tasks",
        help="list the cluster's tasks (containers with their names and addresses)",
        description="List every live task record of the cluster, as a running agent sees it.",
    )
    add_agent_api(tasks)
    tasks.add_argument("--json", action="store_true", help="print JSON")
    tasks.set_defaults(func=_tasks)
