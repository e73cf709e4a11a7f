"""``vxnet log serve|append|status|read``: the masters' replicated log."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, add_group, print_table
from vxnet.cli._common import add_daemon_options, add_tls_options, client_tls, run_daemon

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


def _log_serve(args: argparse.Namespace) -> int:
    from vxnet.replog import run_log_replica

    return run_daemon("vxnet log serve", args, "master", run_log_replica)


def _log_replicas(args: argparse.Namespace) -> tuple[list[tuple[str, int]], Any] | None:
    """The replica addresses of a ``vxnet log`` client command and the ``[tls]`` of its config
    (``None`` without one), or None (error printed)."""
    from vxnet.config import ConfigError, MasterConfig, load_config, parse_hostport
    from vxnet.replog import log_addresses

    if args.replicas:
        try:
            found = [parse_hostport(r.strip()) for r in args.replicas.split(",") if r.strip()]
            return found, None
        except ValueError as exc:
            print(f"vxnet log: --replicas: {exc}", file=sys.stderr)
            return None
    if args.config is None:
        print("vxnet log: give --replicas HOST:PORT,... or --config FILE", file=sys.stderr)
        return None
    try:
        config = load_config(args.config, role="master")
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return None
    assert isinstance(config, MasterConfig)
    return log_addresses(config.log)[1], config.tls


def _log_client(args: argparse.Namespace) -> int:
    import json

    import trio

    from vxnet.replog import (
        AppendUncertain,
        LogUnavailable,
        format_address,
        open_log_client,
        request_once,
    )

    found = _log_replicas(args)
    if found is None:
        return Exit.BAD_INPUT
    replicas, settings = found
    tls = client_tls(args, f"log {args.action}", settings)

    async def append() -> int:
        values = [v.encode() for v in args.values] or [sys.stdin.buffer.read()]
        async with open_log_client(replicas, answer_within=args.wait, tls=tls) as client:
            for value in values:
                print(await client.append(value))
        return Exit.OK

    async def status() -> int:
        views = []
        for address in replicas:
            try:
                views.append(
                    await request_once(address, {"op": "status"}, answer_within=2.0, tls=tls)
                )
            except LogUnavailable as exc:
                views.append({"address": format_address(*address), "error": str(exc)})
        if args.json:
            print(json.dumps(views, indent=2))
            return Exit.OK
        header = ("REPLICA", "ROLE", "STATUS", "LEADER", "COMMIT", "APPLIED", "BALLOT")
        rows = [
            (v["address"], "unreachable", "-", "-", "-", "-", "-")
            if "error" in v
            else (
                v["address"],
                v["role"],
                v["status"],
                v["leader"] or "-",
                str(v["commit"]),
                str(v["applied"]),
                str(v["ballot"]),
            )
            for v in views
        ]
        print_table(header, rows)
        return Exit.OK if all("error" not in v for v in views) else Exit.FAILED

    async def read() -> int:
        answer = await request_once(
            replicas[0], {"op": "read", "from": args.start, "limit": args.limit}, tls=tls
        )
        if not answer.get("ok"):
            print(f"vxnet log read: {answer.get('error')}", file=sys.stderr)
            return Exit.FAILED
        for position, value in answer["entries"]:
            text = value.decode("utf-8", "backslashreplace")
            print(f"{position}\t{text}" if value else f"{position}\t(no-op)")
        return Exit.OK

    action = {"append": append, "status": status, "read": read}[args.action]
    try:
        result: int = trio.run(action)
    except AppendUncertain as exc:
        print(
            f"vxnet log append: uncertain, the value may or may not be in the log: {exc}",
            file=sys.stderr,
        )
        return Exit.FAILED
    except (LogUnavailable, ValueError) as exc:
        print(f"vxnet log {args.action}: {exc}", file=sys.stderr)
        return Exit.FAILED
    return result


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    log_cmds = add_group(
        commands,
        "log",
        "run or query the masters' replicated log",
        description="The masters' Multi-Paxos replicated log: run one replica, append, and "
        "show what each replica knows.",
        dest="action",
    )
    serve = log_cmds.add_parser(
        "serve",
        help="run this master's log replica ([log] and master.data_dir of the config)",
        description="Run one replica of the replicated log until SIGINT or SIGTERM. Its data is "
        "master.data_dir/log.sqlite; it exits with status 1 if the disk fails.",
    )
    add_daemon_options(serve, "master")
    serve.set_defaults(func=_log_serve)
    for name, text in (
        ("append", "append values (arguments, or standard input); print their positions"),
        ("status", "show every replica's role, status, leader and commit index"),
        ("read", "print chosen entries of the first replica named"),
    ):
        cmd = log_cmds.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        where = cmd.add_mutually_exclusive_group()
        where.add_argument("--replicas", metavar="HOST:PORT,...", help="the log replicas")
        where.add_argument(
            "--config", "-c", metavar="FILE", help="take log.replicas (and [tls]) from it"
        )
        add_tls_options(cmd)
        cmd.set_defaults(func=_log_client)
    append_cmd, status_cmd, read_cmd = (log_cmds.choices[n] for n in ("append", "status", "read"))
    append_cmd.add_argument("values", metavar="VALUE", nargs="*")
    append_cmd.add_argument(
        "--wait", type=float, default=5.0, metavar="SECONDS", help="give up after (default 5)"
    )
    status_cmd.add_argument("--json", action="store_true", help="print JSON")
    read_cmd.add_argument("--from", dest="start", type=int, default=0, metavar="POSITION")
    read_cmd.add_argument("--limit", type=int, default=100, metavar="N")
