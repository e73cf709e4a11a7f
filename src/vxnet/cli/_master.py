"""``vxnet master`` (run one) and ``vxnet master state``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, print_table
from vxnet.cli._common import (
    add_address,
    add_daemon_options,
    add_tls_options,
    api_url,
    client_tls,
    daemon_config,
    fetch,
    printed_as_json,
    run_daemon,
)

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


def _master(args: argparse.Namespace) -> int:
    if args.action == "state":
        return _master_state(args)
    if args.config is None:
        print("vxnet master: give --config FILE (or a command: state)", file=sys.stderr)
        return Exit.BAD_INPUT

    from functools import partial
    from pathlib import Path

    from vxnet.master import MasterConfigError, run_master

    run = partial(run_master, config_path=Path(args.config))  # SIGHUP reads [network] again
    return run_daemon("vxnet master", args, "master", run, bad_input=(MasterConfigError,))


def _master_state(args: argparse.Namespace) -> int:
    settings = None
    if args.config is not None:  # `vxnet master --config FILE state`: its [tls]
        config = daemon_config(args.config, "master", False)
        if config is None:
            return Exit.BAD_INPUT
        settings = config.tls
    tls = client_tls(args, "master state", settings)
    api = api_url(args.api, tls)
    state = fetch("master state", f"{api}/overlay-master/state", tls, "master")
    done = printed_as_json(state, args.json)
    if done is not None:
        return done
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
        return Exit.FAILED
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
                cells.append(o.state.status.label)
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
    leader = fetch("master state", f"{api}/overlay-master/leader", tls, "master")
    if isinstance(leader, dict) and leader.get("leader"):
        asked = " (the master asked)" if leader.get("is_leader") else ""
        print(f"leader: {leader['leader']}{asked}")
    return Exit.OK


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    master = commands.add_parser(
        "master",
        help="run a master, or show the allocation state",
        description="Run one master: its replica of the replicated log, the subnet allocator "
        "and the HTTP API (/overlay-master/...), until SIGINT or SIGTERM. With a command, "
        "query a running master instead.",
    )
    add_daemon_options(master, "master", required=False)
    master_cmds = master.add_subparsers(title="master commands", dest="action", metavar="ACTION")
    mstate = master_cmds.add_parser(
        "state",
        help="print the agents and their allocations (a table, or --json)",
        description="Print every agent's VTEP and subnets per network, and free counts.",
    )
    what = "any master's API (a follower sends on to the leader"
    add_address(mstate, "--api", "127.0.0.1:61080", what)
    mstate.add_argument("--json", action="store_true", help="print the JSON state")
    add_tls_options(mstate)
    master.set_defaults(func=_master)
