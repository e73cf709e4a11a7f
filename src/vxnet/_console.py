"""What every ``vxnet`` command-line face shares: exit statuses, subcommands, tables."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

__all__ = ["Exit", "add_command", "add_group", "print_table"]


class Exit(enum.IntEnum):
    """The exit statuses of ``vxnet`` commands."""

    OK = 0
    FAILED = 1  # the machine, a daemon or the cluster refused or is unhealthy
    BAD_INPUT = 2  # a file or an argument is wrong
    MISSING = 2  # something to be installed is missing (the sandbox's prerequisites)
    INTERRUPTED = 130  # SIGINT


def add_command(
    commands: Any,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help: str,
    *,
    description: str | None = None,
    json: bool = False,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` (running ``func``) to ``commands``; with ``json``, its ``--json``."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=description)
    if json:
        parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=func)
    return parser


def add_group(
    commands: Any,
    name: str,
    help: str,
    *,
    description: str | None = None,
    title: str | None = None,
    dest: str | None = None,
) -> Any:
    """Add command group ``name`` to ``commands`` and return its (required) subcommands.

    Their help section is ``title`` (default "NAME commands"); with ``dest``, the chosen
    subcommand's name is stored there.
    """
    group = commands.add_parser(name, help=help, description=description)
    named = {} if dest is None else {"dest": dest}
    return group.add_subparsers(
        title=title or f"{name} commands", metavar="ACTION", required=True, **named
    )


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
