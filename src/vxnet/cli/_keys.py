"""``vxnet keys list|install|use|remove``: the gossip keys of every member, changed cluster-wide
through a running agent, as ``serf keys`` does through a Serf agent (the same key queries, so
vxnet and Serf members answer alike)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, add_command, add_group
from vxnet.cli._common import add_agent_api, api_url

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]

DOING = {
    "list": "Asking all members for installed keys",
    "install": "Installing key on all members",
    "use": "Changing primary key on all members",
    "remove": "Removing key on all members",
}


def _keys(args: argparse.Namespace) -> int:
    from vxnet.http import ApiError, fetch_json

    op = args.keys_command
    url = f"{api_url(args.api)}/v1/keys"
    if not args.json:
        print(f"==> {DOING[op]}...")
    try:
        if op == "list":
            answer = fetch_json(url, timeout=30)
        else:
            answer = fetch_json(url, method="POST", body={"op": op, "key": args.key}, timeout=30)
    except ApiError as exc:
        print(f"vxnet keys {op}: {exc}", file=sys.stderr)
        return Exit.FAILED
    return _report(answer, args.json)


def _report(answer: dict[str, Any], as_json: bool) -> int:
    import json

    members, answered, failed = answer["members"], answer["answered"], answer["failed"]
    ok = failed == 0 and answered == members
    if as_json:
        print(json.dumps(answer, indent=2))
        return Exit.OK if ok else Exit.FAILED
    for node, message in sorted(answer["messages"].items()):
        print(f"    {node}: {message}")
    if answer["op"] == "list" and answered:
        print(f"==> Keys gathered from {answered} of {members} members:")
        primary = answer["primary_keys"]
        for key, count in sorted(answer["keys"].items()):
            mark = f"  primary on {primary[key]}" if key in primary else ""
            print(f"    {key}  [{count}/{members}]{mark}")
    if failed:
        print(f"vxnet keys: {failed}/{members} members reported failure", file=sys.stderr)
    elif answered != members:
        print(
            f"vxnet keys: {answered}/{members} members answered in time; run it again",
            file=sys.stderr,
        )
    elif answer["op"] != "list":
        print(f"==> Done on all {members} members")
    return Exit.OK if ok else Exit.FAILED


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    keys = add_group(
        commands,
        "keys",
        "list and rotate the gossip keys of every member (as serf keys)",
        dest="keys_command",
    )
    listing = add_command(
        keys,
        "list",
        _keys,
        "every member's gossip keys, with how many members hold each",
        json=True,
    )
    add_agent_api(listing)
    for name, what in (
        ("install", "install KEY on every member (it decrypts; the primary key still encrypts)"),
        ("use", "make the installed KEY the primary (encrypting) key on every member"),
        ("remove", "remove KEY from every member (not the primary key)"),
    ):
        parser = add_command(keys, name, _keys, what, json=True)
        parser.add_argument(
            "key", metavar="KEY", help="the key, base64 (as vxnet pki or serf keygen print it)"
        )
        add_agent_api(parser)
