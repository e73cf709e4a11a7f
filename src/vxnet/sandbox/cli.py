"""``vxnet sandbox ...``: the command-line face of :mod:`vxnet.sandbox._sandbox`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, add_command, add_group, print_table

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


def program() -> str:
    """How the user called vxnet, for commands to copy: ``vxnet`` when that is on PATH."""
    me = os.path.realpath(sys.argv[0])
    if me.endswith(".py"):
        return "vxnet"  # python -m vxnet
    found = shutil.which("vxnet")
    if found is not None and os.path.realpath(found) == me:
        return "vxnet"
    relative = os.path.relpath(me, os.getcwd())
    return relative if not relative.startswith("..") else me


def _said(action: str, exc: Exception) -> int:
    """Say why ``vxnet sandbox <action>`` failed; its exit status (130 for an interrupted up)."""
    from vxnet.sandbox._sandbox import SandboxInterrupted

    print(f"vxnet sandbox {action}: {exc}", file=sys.stderr)
    return Exit.INTERRUPTED if isinstance(exc, SandboxInterrupted) else Exit.FAILED


def print_summary(s: dict[str, Any], *, title: str) -> None:
    """The sandbox as text: masters, agents, containers, and what to try."""
    lab = s.get("lab") or {}
    spec = s["spec"]
    print(
        f"{title}: {len(s['masters'])} master{'s' if len(s['masters']) > 1 else ''}, "
        f"{len(s['agents'])} agents, "
        f"{len(s['containers'])} containers"
        + (f", lab {lab['prefix']} (underlay {lab['subnet']})" if lab else "")
        + ("" if spec["docker"] else " (no Docker)")
    )
    secured = s["security"]
    print(f"security: {secured['summary']}")
    if secured["tls"]:
        files = ("operator_cert", "operator_key", "token_file", "gossip_key")
        cert, key, token, gossip = (Path(secured[f]).name for f in files)
        print(
            f"  in {secured['pki']}: {cert} and {key} (for vxnet commands), {token}, {gossip}, "
            "each host's certificate"
        )
    scheme = "https" if secured["tls"] else "http"
    print()
    print("masters")
    print_table(
        ["  HOST", "ADDRESS", "API", "PROCESS"],
        [
            [f"  {m['name']}", str(m["address"]), f"{scheme}://{m['api']}", m["process"]]
            for m in s["masters"]
        ],
    )
    print()
    print("agents")
    rows = []
    for a in s["agents"]:
        overlay = a.get("overlay")
        if overlay is None:
            rows.append([f"  {a['name']}", str(a["address"]), "-", "-", "-", a["process"]])
            continue
        subnets = ", ".join(
            f"{n['network']} {n['subnet'] or ''}{' ' + n['subnet6'] if n.get('subnet6') else ''}"
            for n in overlay["networks"]
        )
        objects = f"{overlay['objects_ok']}/{overlay['objects']} ok"
        rows.append(
            [
                f"  {a['name']}",
                str(a["address"]),
                f"{a.get('vtep_ip')} {a.get('vtep_mac')}",
                subnets,
                f"{overlay['remotes']} remotes, {objects}",
                a["process"],
            ]
        )
    print_table(["  HOST", "ADDRESS", "VTEP IP / MAC", "SUBNETS", "KERNEL", "PROCESS"], rows)
    print()
    print("containers")
    print_table(
        ["  NAME", "KIND", "IP", "IPV6", "DNS NAME"],
        [
            [f"  {c['name']}", c["kind"], str(c["ip"]), c.get("ip6") or "-", c["dns"]]
            for c in s["containers"]
        ],
    )
    reach = s.get("reachability")
    if reach and reach.get("ok"):
        print()
        print(
            f"checked: every container reached every other ({reach['pairs']} pings), every "
            "name answered on every agent and inside every container"
        )
    print()
    print("try:")
    for line in s["try"]:
        print(f"  {line}")
    print(f"  {s['try'][0].split(' sandbox ')[0]} sandbox status | kill a2 | start a2 | down")


def _up(args: argparse.Namespace) -> int:
    from vxnet.sandbox._sandbox import SandboxError, Spec, missing_prerequisites, up

    spec = Spec(
        masters=args.masters,
        agents=args.agents,
        ipv6=args.ipv6,
        docker=args.docker,
        podman=args.podman,
        tls=args.tls,
    )
    try:
        spec.check()
        if missing := missing_prerequisites(spec):
            print("vxnet sandbox up: missing prerequisites:", file=sys.stderr)
            for line in missing:
                print(f"  {line}", file=sys.stderr)
            return Exit.MISSING
        result = up(spec, progress_out=None if args.quiet else sys.stderr, program=program())
    except SandboxError as exc:
        return _said("up", exc)
    if args.json:
        print(json.dumps(result, indent=1))
    elif not args.quiet:
        print_summary(result, title=f"vxnet sandbox is up in {result['ready_s']} s")
    return Exit.OK


def _status(args: argparse.Namespace) -> int:
    from vxnet.sandbox._sandbox import SandboxError, status

    try:
        result = status(program())
    except SandboxError as exc:
        return _said("status", exc)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_summary(result, title=f"vxnet sandbox ({result['phase']})")
    healthy = (
        result["phase"] == "up"
        and all(m["process"] == "running" for m in result["masters"])
        and all(a["process"] == "running" for a in result["agents"])
    )
    return Exit.OK if healthy else Exit.FAILED


def _check(args: argparse.Namespace) -> int:
    from vxnet.sandbox._sandbox import SandboxError, check

    try:
        result = check()
    except SandboxError as exc:
        return _said("check", exc)
    if args.json:
        print(json.dumps(result, indent=1))
        return Exit.OK if result["ok"] else Exit.FAILED
    bad = result["unreachable"]
    print(f"reachability: {result['pairs'] - len(bad)} of {result['pairs']} pings answered")
    for u in bad:
        print(f"  {u['from']} -> {u['to']} ({u['address']}): {u['said'].splitlines()[-1]}")
    inside = result["wrong_inside"]
    print(
        f"names inside containers: {result['lookups_inside'] - len(inside)} of "
        f"{result['lookups_inside']} lookups as expected"
    )
    for w in inside:
        print(f"  {w['container']}: {w['name']}: {w['said']}")
    wrong = result["wrong_answers"]
    asked = ", ".join(result["agents_asked"]) or "none running"
    print(
        f"names: {result['names'] - len(wrong)} of {result['names']} answers as expected ({asked})"
    )
    for w in wrong:
        missing = sorted(set(w["expected"]) - set(w["answered"]))
        extra = sorted(set(w["answered"]) - set(w["expected"]))
        what = "; ".join(
            x
            for x in (
                f"missing {' '.join(missing)}" if missing else "",
                f"not expected {' '.join(extra)}" if extra else "",
            )
            if x
        )
        print(f"  {w['agent']}: {w['name']} {w['type']}: {what}")
    return Exit.OK if result["ok"] else Exit.FAILED


def _replace_process(action: str, argv: list[str]) -> int:
    """Become ``argv`` (its exit status is then the command's); if it cannot run, say why."""
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - the user's command, or tail on a sandbox log
    except OSError as exc:
        print(f"vxnet sandbox {action}: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
    return Exit.FAILED


def _exec(args: argparse.Namespace) -> int:
    from vxnet.sandbox._sandbox import SandboxError, exec_argv

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("vxnet sandbox exec: give a command to run, e.g. ip addr", file=sys.stderr)
        return Exit.MISSING
    try:
        argv = exec_argv(args.name, command)
    except SandboxError as exc:
        return _said("exec", exc)
    return _replace_process("exec", argv)


def _logs(args: argparse.Namespace) -> int:
    from vxnet.sandbox._sandbox import SandboxError, log_path

    try:
        path = log_path(args.name, dockerd=args.dockerd)
    except SandboxError as exc:
        return _said("logs", exc)
    argv = ["tail", "-n", str(args.lines), *(["-f"] if args.follow else []), str(path)]
    return _replace_process("logs", argv)


def _kill(args: argparse.Namespace) -> int:
    from vxnet.sandbox._sandbox import SandboxError, kill

    try:
        print(kill(args.name, sig=signal.Signals[f"SIG{args.signal}"]))
    except SandboxError as exc:
        return _said("kill", exc)
    return Exit.OK


def _start(args: argparse.Namespace) -> int:
    from vxnet.sandbox._sandbox import SandboxError, start

    try:
        print(start(args.name))
    except SandboxError as exc:
        return _said("start", exc)
    return Exit.OK


def _down(args: argparse.Namespace) -> int:
    from vxnet.sandbox._sandbox import SandboxError, down

    try:
        done = down()
    except SandboxError as exc:
        return _said("down", exc)
    if not args.quiet:
        for line in done or ["no sandbox is up: nothing to remove"]:
            print(line)
    return Exit.OK


def add_parser(commands: Any) -> None:
    """Add ``sandbox`` and its actions to the ``vxnet`` parser's subcommands."""
    actions = add_group(
        commands,
        "sandbox",
        "a whole cluster on this machine, in network namespaces (root)",
        description="A local vxnet cluster: masters, agents, CNI and Docker containers in "
        "network namespaces of this machine, with real VxLAN between the hosts and real DNS. "
        "Needs root. It lives in /run/vxnet/sandbox (or $VXNET_SANDBOX_DIR) until `down`.",
        title="sandbox actions",
    )
    up = actions.add_parser(
        "up",
        help="build the sandbox and show it working",
        description="Build the hosts, start the masters and agents, a dockerd per agent host "
        "(when Docker is installed) and sample containers on every agent, wait until the "
        "overlay has converged, every name resolves on every agent and every container "
        "reaches every other, then print a summary. The cluster runs with TLS (a CA of its own "
        "in the sandbox's pki/), a master token and gossip encryption unless --no-tls.",
    )
    up.add_argument(
        "--masters", type=int, choices=[1, 3], default=1, help="1 or 3 masters (default 1)"
    )
    up.add_argument("--agents", type=int, default=3, metavar="N", help="agents, 2-20 (default 3)")
    up.add_argument("--ipv6", action="store_true", help="dual-stack overlay (fd01:b::/64)")
    docker = up.add_mutually_exclusive_group()
    docker.add_argument(
        "--docker",
        dest="docker",
        action="store_const",
        const=True,
        default=None,
        help="run Docker containers too (the default when dockerd is installed)",
    )
    docker.add_argument(
        "--no-docker", dest="docker", action="store_const", const=False, help="CNI containers only"
    )
    up.add_argument(
        "--podman",
        action="store_true",
        help="a private podman on every agent too, running a sample container aN-api through "
        "the agent's CNI configuration (needs podman and runc)",
    )
    up.add_argument(
        "--no-tls",
        dest="tls",
        action="store_false",
        help="plain mode: no TLS, no master token, gossip in clear (default: all three on)",
    )
    up.add_argument("--quiet", action="store_true", help="no progress, no summary: exit status")
    up.add_argument("--json", action="store_true", help="print the summary as JSON")
    up.set_defaults(func=_up)
    add_command(
        actions, "status", _status, "what runs, what the kernel holds, the containers", json=True
    )
    add_command(
        actions,
        "check",
        _check,
        "ping every container pair and ask every agent every name, once, now",
        description="Look once: does every container reach every other, and does every "
        "running agent answer every name as the sandbox's containers say it should? Exit "
        "status 1 when something failed (say, after `kill a2` and its grace).",
        json=True,
    )
    ex = add_command(
        actions,
        "exec",
        _exec,
        "run a command in a host or container (vxnet sandbox exec a1 ip route)",
        description="Run CMD in the network namespace of a host (m1, a1, ...) or a container "
        "(a1-web, a1-db, ...), with this machine's tools; `vxnet` runs this vxnet.",
    )
    ex.add_argument("name", metavar="NAME", help="host or container")
    ex.add_argument("command", nargs="...", metavar="CMD", help="the command and its arguments")
    lg = add_command(
        actions,
        "logs",
        _logs,
        "the end of a host's vxnet log (or its dockerd's)",
        description="Print the last lines of the log of a host's vxnet master or agent "
        "(with --dockerd, of its dockerd); --follow keeps printing what is added.",
    )
    lg.add_argument("name", metavar="HOST", help="m1, a1, ...")
    lg.add_argument("-n", "--lines", type=int, default=40, metavar="N", help="lines (default 40)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.add_argument("--dockerd", action="store_true", help="the host's dockerd log instead")
    k = add_command(
        actions, "kill", _kill, "stop a host's vxnet process (to watch failure handling)"
    )
    k.add_argument("name", metavar="HOST", help="an agent (a1, ...) or a master (m1, ...)")
    k.add_argument(
        "--signal", choices=["KILL", "TERM"], default="KILL", help="signal (default KILL)"
    )
    add_command(
        actions, "start", _start, "start a stopped host's vxnet process again"
    ).add_argument("name", metavar="HOST")
    add_command(
        actions,
        "down",
        _down,
        "remove everything the sandbox made (also after a crash; idempotent)",
    ).add_argument("--quiet", action="store_true", help="print nothing")
