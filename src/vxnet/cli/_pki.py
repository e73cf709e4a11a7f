"""``vxnet pki init|issue|show``: the cluster's CA, its certificates and its gossip key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, add_group

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


def _pki(args: argparse.Namespace) -> int:
    from vxnet.pki import PkiError, describe, init_ca, issue

    try:
        if args.action == "init":
            written = init_ca(Path(args.dir), days=args.days, force=args.force)
        elif args.action == "issue":
            issued = issue(
                Path(args.dir),
                args.role,
                args.name,
                ips=args.ip,
                dns=args.dns,
                days=args.days,
                force=args.force,
            )
            written = [issued.cert, issued.key]
        else:
            for line in describe(Path(args.file)):
                print(line)
            return Exit.OK
    except PkiError as exc:
        print(f"vxnet pki {args.action}: {exc}", file=sys.stderr)
        return Exit.BAD_INPUT
    for path in written:
        print(f"wrote {path}")
    return Exit.OK


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    pki_cmds = add_group(
        commands,
        "pki",
        "the cluster's CA, certificates and gossip key",
        description="Create the cluster's certificate authority and gossip key, issue "
        "certificates for masters, agents and operators, and show what a file holds.",
        dest="action",
    )
    init = pki_cmds.add_parser(
        "init",
        help="create a CA and a gossip key in DIR",
        description="Create DIR/ca.pem, DIR/ca-key.pem (0600) and DIR/gossip.key (0600, 32 "
        "bytes, base64 as `serf keygen` prints it). Existing files are kept unless --force.",
    )
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--days", type=int, default=3650, help="CA validity (default 3650)")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(func=_pki)
    iss = pki_cmds.add_parser(
        "issue",
        help="issue a master, agent or operator certificate",
        description="Write DIR/NAME.pem and DIR/NAME-key.pem (0600), signed by the CA in DIR, "
        "for the role given and the addresses and DNS names it will be reached at.",
    )
    iss.add_argument("name", metavar="NAME")
    iss.add_argument("--role", required=True, choices=("master", "agent", "operator"))
    iss.add_argument("--dir", default=".", help="the CA's directory (default .)")
    iss.add_argument("--ip", action="append", default=[], help="an IP address (repeatable)")
    iss.add_argument("--dns", action="append", default=[], help="a DNS name (repeatable)")
    iss.add_argument("--days", type=int, default=365, help="validity (default 365)")
    iss.add_argument("--force", action="store_true", help="replace existing files (rotation)")
    iss.set_defaults(func=_pki)
    show = pki_cmds.add_parser(
        "show",
        help="what a certificate, key or gossip key file holds",
        description="Print a certificate's subject, role, names, validity and fingerprint; a "
        "private key's type and file mode; or a gossip key's length.",
    )
    show.add_argument("file", metavar="FILE")
    show.set_defaults(func=_pki)
