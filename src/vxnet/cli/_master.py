"""``vxnet master`` (run one) and ``vxnet master state``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from vxnet._console import print_table
from vxnet.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    api_url,
    daemon_config,
    fetch,
    run_unwrapped,
)

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


def _master(args: argparse.Namespace) -> int:
    if args.action == "state":
        return _master_state(args)
    if args.config is None:
        print("vxnet master: give --config FILE (or a command: state)", file=sys.stderr)
        return EXIT_BAD_INPUT

    from vxnet.master import MasterConfigError, run_master
    from vxnet.replog import StorageFailure

    config = daemon_config(args.config, "master", args.verbose)
    if config is None:
        return EXIT_BAD_INPUT
    try:
        run_unwrapped(run_master, config)
    except MasterConfigError as exc:
        print(f"vxnet master: {args.config}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageFailure as exc:
        print(f"vxnet master: the log replica stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"vxnet master: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _master_state(args: argparse.Namespace) -> int:
    import json

    state = fetch("master state", f"{api_url(args.api)}/overlay-master/state")
    if state is None:
        return EXIT_FAILED
    if args.json:
        print(json.dumps(state, indent=2))
        return EXIT_OK
    from vxnet.records import OverlayInfo, RecordError, agent_infos

    try:
        network = state.get("network") if isinstance(state, dict) else None
        overlays_json = network.get("overlays") if isinstance(network, dict) else None
        if not isinstance(overlays_json, list):
            raise RecordError("network.overlays: expected a list")
        names = [OverlayInfo.from_json(o, "network.overlays[]").name for o in overlays_json]
        agents = agent_infos(state.get("agents"))
    except RecordError as exc:
        print(f"vxnet master state: the master answered a bad state: {exc}", file=sys.stderr)
        return EXIT_FAILED
    header = ("AGENT", "VTEP IP", "VTEP MAC", *(n.upper() for n in names))
    rows = []
    for agent in agents:
        overlays = {o.name: o for o in agent.overlays}
        vxlan = agent.vxlan()
        cells = []
        for name in names:
            o = overlays.get(name)
            if o is None:
                cells.append("-")
            elif not o.ok:
                cells.append(o.state.status.value.removeprefix("STATUS_"))
            else:
                cells.append(" ".join(o.subnets()))
        vtep = ("-", "-") if vxlan is None else (vxlan.vtep_ip, vxlan.vtep_mac)
        rows.append((agent.ip, *vtep, *cells))
    print_table(header, rows)
    print()
    free = state.get("free", {})
    for name, counts in free.items():
        print(
            f"{name}: {counts.get('used', 0)} of {counts.get('total', 0)} in use, "
            f"{counts.get('free', 0)} free"
        )
    leader = fetch("master state", f"{api_url(args.api)}/overlay-master/leader")
    if isinstance(leader, dict) and leader.get("leader"):
        asked = " (the master asked)" if leader.get("is_leader") else ""
        print(f"leader: {leader['leader']}{asked}")
    return EXIT_OK


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    master = commands.add_parser(
        "master",
        help="run a master, or show the allocation state",
        description="Run one master: its replica of the replicated log, the subnet allocator "
        "and the HTTP API (/overlay-master/...), until SIGINT or SIGTERM. With a command, "
        "query a running master instead.",
    )
    master.add_argument("--config", "-c", metavar="FILE", help="master TOML file")
    master.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    master_cmds = master.add_subparsers(title="master commands", dest="action", metavar="ACTION")
    mstate = master_cmds.add_parser(
        "state",
        help="print the agents and their allocations (a table, or --json)",
        description="Print every agent's VTEP and subnets per network, and free counts.",
    )
    mstate.add_argument(
        "--api",
        default="127.0.0.1:61080",
        metavar="HOST:PORT",
        help="any master's API (a follower sends on to the leader; default 127.0.0.1:61080)",
    )
    mstate.add_argument("--json", action="store_true", help="print the JSON state")
    master.set_defaults(func=_master)
