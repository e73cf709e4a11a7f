"""The ``vxnet`` command.

Exit status: 0 on success, 2 when the input (a file, an argument) is wrong, 1 when the machine
refused (a step of the lab failed).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Literal

from vxnet import __version__
from vxnet._console import print_table

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
AGENT_API = "127.0.0.1:62080"  # agent.listen's default


def _config_check(args: argparse.Namespace) -> int:
    from vxnet.config import ConfigError, load_config, to_json, to_toml

    try:
        config = load_config(args.file, role=args.role)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        count = len(exc.problems)
        print(f"{args.file}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(to_json(config) if args.json else to_toml(config))
    return EXIT_OK


def _config_example(args: argparse.Namespace) -> int:
    from vxnet.config import example_toml

    sys.stdout.write(example_toml(args.role))
    return EXIT_OK


def _config_reference(args: argparse.Namespace) -> int:
    from vxnet.config import reference_markdown

    sys.stdout.write(reference_markdown())
    return EXIT_OK


def _daemon_config(path: str, role: Literal["master", "agent"], verbose: bool) -> Any:
    """The validated config of a long-running command, logging set up; None (printed) if bad."""
    import logging

    from vxnet.config import ConfigError, load_config

    try:
        config = load_config(path, role=role)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return config


def _agent(args: argparse.Namespace) -> int:

    from vxnet.agent import run_agent

    config = _daemon_config(args.config, "agent", args.verbose)
    if config is None:
        return EXIT_BAD_INPUT
    from vxnet.overlay._ipam import IpamError

    try:
        _run_unwrapped(run_agent, config)
    except (OSError, IpamError) as exc:
        print(f"vxnet agent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:
        print(f"vxnet agent: {args.config}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _run_unwrapped(fn: Any, *args: Any) -> Any:
    """``trio.run(fn, *args)``, raising the error itself when a nursery wrapped one error in
    exception groups (a daemon that fails at start fails for one reason, said plainly)."""
    import trio

    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from group
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _members(args: argparse.Namespace) -> int:
    import json

    data = _fetch("members", f"{_api_url(args.api)}/v1/members")
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


def _fetch(command: str, url: str) -> Any:
    """``fetch_json(url)``, or ``None`` with the reason printed for ``vxnet <command>``."""
    from vxnet.http import ApiError, fetch_json

    try:
        return fetch_json(url)
    except ApiError as exc:
        print(f"vxnet {command}: {exc}", file=sys.stderr)
        return None


def _api_url(api: str) -> str:
    url = api.rstrip("/")
    return url if "://" in url else f"http://{url}"


def _store(args: argparse.Namespace) -> int:
    import json
    from urllib.parse import quote

    from vxnet.http import ApiError, fetch_json

    base = _api_url(args.api) + "/v1/store"
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


def _master(args: argparse.Namespace) -> int:
    if args.action == "state":
        return _master_state(args)
    if args.config is None:
        print("vxnet master: give --config FILE (or a command: state)", file=sys.stderr)
        return EXIT_BAD_INPUT

    from vxnet.master import MasterConfigError, run_master
    from vxnet.replog import StorageFailure

    config = _daemon_config(args.config, "master", args.verbose)
    if config is None:
        return EXIT_BAD_INPUT
    try:
        _run_unwrapped(run_master, config)
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

    state = _fetch("master state", f"{_api_url(args.api)}/overlay-master/state")
    if state is None:
        return EXIT_FAILED
    if args.json:
        print(json.dumps(state, indent=2))
        return EXIT_OK
    names = [o["name"] for o in state["network"]["overlays"]]
    header = ("AGENT", "VTEP IP", "VTEP MAC", *(n.upper() for n in names))
    rows = []
    for agent in state["agents"]:
        overlays = {o["info"]["name"]: o for o in agent["overlays"]}
        vxlan: dict[str, str] = next(
            (o["backend"]["vxlan"] for o in agent["overlays"] if "backend" in o), {}
        )
        cells = []
        for name in names:
            o = overlays.get(name)
            if o is None:
                cells.append("-")
            elif o.get("state", {}).get("status") == "STATUS_FAILED":
                cells.append("FAILED")
            else:
                cells.append(" ".join(x for x in (o.get("subnet"), o.get("subnet6")) if x))
        rows.append((agent["ip"], vxlan.get("vtep_ip", "-"), vxlan.get("vtep_mac", "-"), *cells))
    print_table(header, rows)
    print()
    free = state.get("free", {})
    for name, counts in free.items():
        print(
            f"{name}: {counts.get('used', 0)} of {counts.get('total', 0)} in use, "
            f"{counts.get('free', 0)} free"
        )
    leader = _fetch("master state", f"{_api_url(args.api)}/overlay-master/leader")
    if isinstance(leader, dict) and leader.get("leader"):
        asked = " (the master asked)" if leader.get("is_leader") else ""
        print(f"leader: {leader['leader']}{asked}")
    return EXIT_OK


def _overlay_status(args: argparse.Namespace) -> int:
    import json

    status = _fetch("overlay status", f"{_api_url(args.api)}/overlay-agent/status")
    if status is None:
        return EXIT_FAILED
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    info = status.get("info")
    registration = status.get("registration", {})
    if info is None:
        error = registration.get("last_error") or "no master has answered yet"
        print(f"agent {status['agent_ip']}: not registered yet ({error})")
        return EXIT_FAILED
    vxlan: dict[str, Any] = next(
        (o["backend"]["vxlan"] for o in info["overlays"] if "backend" in o), {}
    )
    print(
        f"agent {status['agent_ip']}: allocation from {registration.get('source')}; "
        f"{status['vtep']} {vxlan.get('vtep_ip', '-')} {vxlan.get('vtep_ip6', '')} "
        f"{vxlan.get('vtep_mac', '-')}".replace("  ", " ")
    )
    if registration.get("last_error"):
        print(f"last registration error: {registration['last_error']}")
    rows = []
    for o in info["overlays"]:
        state = o.get("state", {})
        ok = state.get("status") == "STATUS_OK"
        rows.append(
            (
                o["info"]["name"],
                "OK" if ok else f"FAILED: {state.get('error', '')}",
                " ".join(x for x in (o.get("subnet"), o.get("subnet6")) if x) or "-",
                o.get("mesos_bridge", {}).get("name", "-") if ok else "-",
                o.get("docker_bridge", {}).get("name", "-") if ok else "-",
            )
        )
    print_table(("NETWORK", "STATUS", "SUBNETS", "CNI BRIDGE", "DOCKER BRIDGE"), rows)
    nat = "off"
    if status.get("egress_nat"):
        nat = "on" if status.get("nat_programmed") else "on, NOT programmed (see the agent's log)"
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
        return EXIT_FAILED
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
    return EXIT_OK


def _overlay_usage(args: argparse.Namespace) -> int:
    import json

    answer = _fetch("overlay usage", f"{_api_url(args.api)}/v1/store?prefix=usage/&live=1")
    if answer is None:
        return EXIT_FAILED
    records = answer.get("records", [])
    rows = []
    low = []
    for record in sorted(records, key=lambda r: _ip_order(r["key"].removeprefix("usage/"))):
        agent = record["key"].removeprefix("usage/")
        for network, halves in sorted(record["value"].get("networks", {}).items()):
            for half, c in sorted(halves.items()):
                for suffix in ("", "6"):
                    if f"total{suffix}" not in c:
                        continue
                    total, used = c[f"total{suffix}"], c[f"allocated{suffix}"]
                    free = c[f"free{suffix}"]
                    share = used / total if total else 1.0
                    flag = "LOW" if free < max(1, total // 10) else ""
                    name = f"{half}{' IPv6' if suffix else ''}"
                    rows.append((agent, network, name, str(used), str(free), f"{share:.0%}", flag))
                    if flag:
                        low.append(f"{agent} {network} {name}: {free} free of {total}")
    if args.json:
        print(json.dumps({r["key"].removeprefix("usage/"): r["value"] for r in records}, indent=2))
        return EXIT_OK
    print_table(("AGENT", "NETWORK", "HALF", "ALLOCATED", "FREE", "USED", ""), rows)
    if low:
        print()
        print(f"{len(low)} close to exhaustion (under 10 % free):")
        for line in low:
            print(f"  {line}")
    return EXIT_OK


def _ip_order(text: str) -> tuple[int, str]:
    from ipaddress import ip_address

    try:
        return (int(ip_address(text)), text)
    except ValueError:
        return (0, text)


def _tasks(args: argparse.Namespace) -> int:
    import json

    answer = _fetch("tasks", f"{_api_url(args.api)}/v1/tasks")
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


def _dns_lookup(args: argparse.Namespace) -> int:
    import socket
    import struct
    import time

    from dnslib import QTYPE, DNSError, DNSRecord

    from vxnet.config import parse_hostport

    try:
        host, port = parse_hostport(args.server, any_port=True)
        query = DNSRecord.question(args.name, args.type.upper())
    except (ValueError, DNSError, KeyError) as exc:
        print(f"vxnet dns lookup: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    packet = query.pack()
    start = time.perf_counter()
    try:
        if args.tcp:
            with socket.create_connection((host, port), timeout=args.timeout) as sock:
                sock.sendall(struct.pack("!H", len(packet)) + packet)
                data = b""
                while len(data) < 2 or len(data) < 2 + struct.unpack_from("!H", data)[0]:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise OSError("the server closed the connection")
                    data += chunk
                data = data[2:]
        else:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(args.timeout)
                sock.sendto(packet, (host, port))
                data = sock.recv(65535)
        reply = DNSRecord.parse(data)
    except (OSError, DNSError) as exc:
        print(
            f"vxnet dns lookup: {args.server}: {exc} (is the agent's DNS listening there?)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    took = (time.perf_counter() - start) * 1000
    rcode = reply.header.get_rcode()
    for rr in reply.rr:
        print(f"{rr.rname}\t{rr.ttl}\t{QTYPE.get(rr.rtype)}\t{rr.rdata}")
    flags = []
    if reply.header.aa:
        flags.append("authoritative")
    if reply.header.tc:
        flags.append("truncated: ask again with --tcp")
    from dnslib import RCODE

    print(
        f";; {RCODE.get(rcode)} from {args.server} in {took:.1f} ms"
        + (f" ({', '.join(flags)})" if flags else ""),
        file=sys.stderr,
    )
    return EXIT_OK if rcode == 0 and reply.rr else EXIT_FAILED


def _log_serve(args: argparse.Namespace) -> int:

    from vxnet.replog import StorageFailure, run_log_replica

    config = _daemon_config(args.config, "master", args.verbose)
    if config is None:
        return EXIT_BAD_INPUT
    try:
        _run_unwrapped(run_log_replica, config)
    except StorageFailure as exc:
        print(f"vxnet log serve: the replica stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"vxnet log serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _log_replicas(args: argparse.Namespace) -> list[tuple[str, int]] | None:
    """The replica addresses of a ``vxnet log`` client command, or None (error printed)."""
    from vxnet.config import ConfigError, MasterConfig, load_config, parse_hostport
    from vxnet.replog import log_addresses

    if args.replicas:
        try:
            return [parse_hostport(r.strip()) for r in args.replicas.split(",") if r.strip()]
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
    return log_addresses(config.log)[1]


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

    replicas = _log_replicas(args)
    if replicas is None:
        return EXIT_BAD_INPUT

    async def append() -> int:
        values = [v.encode() for v in args.values] or [sys.stdin.buffer.read()]
        async with open_log_client(replicas, answer_within=args.wait) as client:
            for value in values:
                print(await client.append(value))
        return EXIT_OK

    async def status() -> int:
        views = []
        for address in replicas:
            try:
                views.append(await request_once(address, {"op": "status"}, answer_within=2.0))
            except LogUnavailable as exc:
                views.append({"address": format_address(*address), "error": str(exc)})
        if args.json:
            print(json.dumps(views, indent=2))
            return EXIT_OK
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
        return EXIT_OK if all("error" not in v for v in views) else EXIT_FAILED

    async def read() -> int:
        answer = await request_once(
            replicas[0], {"op": "read", "from": args.start, "limit": args.limit}
        )
        if not answer.get("ok"):
            print(f"vxnet log read: {answer.get('error')}", file=sys.stderr)
            return EXIT_FAILED
        for position, value in answer["entries"]:
            text = value.decode("utf-8", "backslashreplace")
            print(f"{position}\t{text}" if value else f"{position}\t(no-op)")
        return EXIT_OK

    action = {"append": append, "status": status, "read": read}[args.action]
    try:
        result: int = trio.run(action)
    except AppendUncertain as exc:
        print(
            f"vxnet log append: uncertain, the value may or may not be in the log: {exc}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except (LogUnavailable, ValueError) as exc:
        print(f"vxnet log {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return result


def _lab_cleanup(args: argparse.Namespace) -> int:
    from vxnet.sandbox.lab import cleanup

    report = cleanup(everything=args.all)
    for line in report:
        print(line)
    if not report:
        print(
            "no lab to remove"
            + (
                ""
                if args.all
                else " (labs of running owners and the sandbox's are kept; --all removes them too)"
            )
        )
    return EXIT_FAILED if any(line.startswith("could not") for line in report) else EXIT_OK


def _add_agent_api(parser: argparse.ArgumentParser) -> None:
    """The ``--api`` option of the commands that ask a running agent."""
    parser.add_argument(
        "--api",
        default=AGENT_API,
        metavar="HOST:PORT",
        help=f"the agent's API address (its agent.listen; default {AGENT_API})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vxnet`` (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="vxnet",
        description="IP-per-container networking: a VxLAN layer-3 overlay for container clusters.",
    )
    parser.add_argument("--version", action="version", version=f"vxnet {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    config = commands.add_parser("config", help="check and show configuration files")
    config_cmds = config.add_subparsers(title="config commands", metavar="ACTION", required=True)
    check = config_cmds.add_parser(
        "check",
        help="validate a file and print the effective configuration",
        description="Validate a master or agent configuration file. On success print the "
        "effective configuration (defaults filled in) and exit 0; otherwise print every "
        "problem found and exit 2.",
    )
    check.add_argument("file", metavar="FILE", help="the TOML file")
    check.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    check.add_argument(
        "--role",
        choices=("master", "agent"),
        help="the file's role (default: told from its tables: [master]/[network] or [agent])",
    )
    check.set_defaults(func=_config_check)
    example = config_cmds.add_parser(
        "example", help="print a commented file with every setting and its default"
    )
    example.add_argument("role", choices=("master", "agent"))
    example.set_defaults(func=_config_example)
    reference = config_cmds.add_parser(
        "reference", help="print the configuration reference (Markdown)"
    )
    reference.set_defaults(func=_config_reference)

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
    _add_agent_api(members)
    members.add_argument("--json", action="store_true", help="print JSON")
    members.set_defaults(func=_members)

    store = commands.add_parser(
        "store",
        help="read and write the replicated store through a running agent",
        description="Read and write the replicated store through a running agent's API.",
    )
    _add_agent_api(store)
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

    overlay = commands.add_parser(
        "overlay",
        help="inspect a running agent's overlay",
        description="Inspect a running agent's overlay through its API.",
    )
    overlay_cmds = overlay.add_subparsers(
        title="overlay commands", dest="action", metavar="ACTION", required=True
    )
    ostatus = overlay_cmds.add_parser(
        "status",
        help="the agent's allocation and its kernel objects against the desired state",
        description="Print the agent's allocation (VTEP, subnets per network), egress NAT, "
        "counters, and every route, neighbour and FDB entry vxnet owns with whether it "
        "matches the desired state.",
    )
    _add_agent_api(ostatus)
    ostatus.add_argument("--json", action="store_true", help="print JSON")
    ostatus.set_defaults(func=_overlay_status)
    ousage = overlay_cmds.add_parser(
        "usage",
        help="container addresses allocated and free on every agent, cluster-wide",
        description="Print, for every live agent, network and half (cni, docker), how many "
        "container addresses are allocated and free, and which agents are close to exhaustion.",
    )
    _add_agent_api(ousage)
    ousage.add_argument("--json", action="store_true", help="print JSON")
    ousage.set_defaults(func=_overlay_usage)

    tasks = commands.add_parser(
        "tasks",
        help="list the cluster's tasks (containers with their names and addresses)",
        description="List every live task record of the cluster, as a running agent sees it.",
    )
    _add_agent_api(tasks)
    tasks.add_argument("--json", action="store_true", help="print JSON")
    tasks.set_defaults(func=_tasks)

    dns = commands.add_parser(
        "dns",
        help="query the DNS an agent serves",
        description="Query the DNS server of a running agent.",
    )
    dns_cmds = dns.add_subparsers(
        title="dns commands", dest="action", metavar="ACTION", required=True
    )
    lookup = dns_cmds.add_parser(
        "lookup",
        help="resolve a name through a running agent",
        description="Resolve NAME through an agent's DNS server and print the answer records "
        "(exit 1 when there is none).",
    )
    lookup.add_argument("name", metavar="NAME")
    lookup.add_argument("--type", default="A", help="record type (default A)")
    lookup.add_argument(
        "--server",
        default="127.0.0.1:53",
        metavar="HOST:PORT",
        help="the agent's DNS address (one of dns.listen; default 127.0.0.1:53)",
    )
    lookup.add_argument("--tcp", action="store_true", help="ask over TCP")
    lookup.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    lookup.set_defaults(func=_dns_lookup)

    replog = commands.add_parser(
        "log",
        help="run or query the masters' replicated log",
        description="The masters' Multi-Paxos replicated log: run one replica, append, and "
        "show what each replica knows.",
    )
    log_cmds = replog.add_subparsers(
        title="log commands", dest="action", metavar="ACTION", required=True
    )
    serve = log_cmds.add_parser(
        "serve",
        help="run this master's log replica ([log] and master.data_dir of the config)",
        description="Run one replica of the replicated log until SIGINT or SIGTERM. Its data is "
        "master.data_dir/log.sqlite; it exits with status 1 if the disk fails.",
    )
    serve.add_argument("--config", "-c", required=True, metavar="FILE", help="master TOML file")
    serve.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    serve.set_defaults(func=_log_serve)
    for name, text in (
        ("append", "append values (arguments, or standard input); print their positions"),
        ("status", "show every replica's role, status, leader and commit index"),
        ("read", "print chosen entries of the first replica named"),
    ):
        cmd = log_cmds.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        where = cmd.add_mutually_exclusive_group()
        where.add_argument("--replicas", metavar="HOST:PORT,...", help="the log replicas")
        where.add_argument("--config", "-c", metavar="FILE", help="take log.replicas from it")
        cmd.set_defaults(func=_log_client)
    append_cmd, status_cmd, read_cmd = (log_cmds.choices[n] for n in ("append", "status", "read"))
    append_cmd.add_argument("values", metavar="VALUE", nargs="*")
    append_cmd.add_argument(
        "--wait", type=float, default=5.0, metavar="SECONDS", help="give up after (default 5)"
    )
    status_cmd.add_argument("--json", action="store_true", help="print JSON")
    read_cmd.add_argument("--from", dest="start", type=int, default=0, metavar="POSITION")
    read_cmd.add_argument("--limit", type=int, default=100, metavar="N")

    lab = commands.add_parser("lab", help="network-namespace labs used by tests and the sandbox")
    lab_cmds = lab.add_subparsers(title="lab commands", metavar="ACTION", required=True)
    clean = lab_cmds.add_parser(
        "cleanup",
        help="remove labs left behind by runs that died",
        description="Stop the processes of, and delete the namespaces of, every lab whose "
        "owner process is gone, except the sandbox's (with --all, of every lab). Needs root.",
    )
    clean.add_argument("--all", action="store_true", help="also remove labs of running owners")
    clean.set_defaults(func=_lab_cleanup)

    from vxnet.sandbox import cli as sandbox_cli

    sandbox_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vxnet`` with ``argv`` (default: the process arguments); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except PermissionError as exc:
        print(f"vxnet: {exc} (this command needs root)", file=sys.stderr)
        return EXIT_FAILED
    return status
