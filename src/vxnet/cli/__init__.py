"""The ``vxnet`` command: one module per group of commands, each adding its own parsers.

Exit status: 0 on success, 2 when the input (a file, an argument) is wrong, 1 when the machine
refused (a step of the lab failed). :mod:`._common` holds what the groups share.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from vxnet import __version__
from vxnet._console import Exit
from vxnet.cli import _agent, _config, _dns, _keys, _lab, _log, _master, _overlay, _pki

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vxnet`` (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="vxnet",
        description="IP-per-container networking: a VxLAN layer-3 overlay for container clusters.",
    )
    parser.add_argument("--version", action="version", version=f"vxnet {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for group in (_config, _agent, _master, _overlay, _dns, _keys, _log, _lab, _pki):
        group.add_parser(commands)

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
        return Exit.FAILED
    return status
