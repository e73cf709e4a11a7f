"""``vxnet pki init|issue|show``: the cluster's CA, its certificates and its gossip key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, add_command, add_group

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

__all__ = ["add_parser"]


def _init(args: argparse.Namespace) -> list[Path]:
    from vxnet.pki import init_ca

    return init_ca(Path(args.dir), days=args.days, force=args.force)


def _issue(args: argparse.Namespace) -> list[Path]:
    from vxnet.pki import issue

    issued = issue(
        Path(args.dir),
        args.role,
        args.name,
        ips=args.ip,
        dns=args.dns,
        days=args.days,
        force=args.force,
    )
    return [issued.cert, issued.key]


def _show(args: argparse.Namespace) -> list[Path]:
    from vxnet.pki import describe

    for line in describe(Path(args.file)):
        print(line)
    return []


def _reporting(action: str, run: Callable[[argparse.Namespace], list[Path]]) -> Any:
    """``run`` as a command: the files it wrote listed, a refusal on stderr with exit 2."""

    def command(args: argparse.Namespace) -> int:
        from vxnet.pki import PkiError

        try:
            written = run(args)
        except PkiError as exc:
            print(f"vxnet pki {action}: {exc}", file=sys.stderr)
            return Exit.BAD_INPUT
        for path in written:
            print(f"wrote {path}")
        return Exit.OK

    return command


_COMMANDS = (
    (
        "init",
        _init,
        "create a CA and a gossip key in DIR",
        "Create DIR/ca.pem, DIR/ca-key.pem (0600) and DIR/gossip.key (0600, 32 bytes, base64 as "
        "`serf keygen` prints it).",
    ),
    (
        "issue",
        _issue,
        "issue a master, agent or operator certificate",
        "Write DIR/NAME.pem and DIR/NAME-key.pem (0600), signed by the CA in DIR, for the role "
        "given and the addresses and DNS names it will be reached at.",
    ),
    (
        "show",
        _show,
        "what a certificate, key or gossip key file holds",
        "Print a certificate's subject, role, names, validity and fingerprint; a private key's "
        "type and file mode; or a gossip key's length.",
    ),
)


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    pki_cmds = add_group(commands, "pki", "the cluster's CA, its certificates and gossip key")
    init, iss, show = (
        add_command(pki_cmds, name, _reporting(name, run), text, description=description)
        for name, run, text, description in _COMMANDS
    )
    init.add_argument("dir", metavar="DIR")
    iss.add_argument("name", metavar="NAME")
    iss.add_argument("--role", required=True, choices=("master", "agent", "operator"))
    iss.add_argument("--dir", default=".", help="the CA's directory (default .)")
    for flag, what in (("--ip", "an IP address"), ("--dns", "a DNS name")):
        iss.add_argument(flag, action="append", default=[], help=f"{what} (repeatable)")
    for parser, days in ((init, 3650), (iss, 365)):
        parser.add_argument("--days", type=int, default=days, help=f"validity (default {days})")
        parser.add_argument("--force", action="store_true", help="replace existing files")
    show.add_argument("file", metavar="FILE")
