"""``vxnet lab cleanup``: labs left behind by test runs that died."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, add_group

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


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
    return Exit.FAILED if any(line.startswith("could not") for line in report) else Exit.OK


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    lab_cmds = add_group(commands, "lab", "network-namespace labs used by tests and the sandbox")
    clean = lab_cmds.add_parser(
        "cleanup",
        help="remove labs left behind by runs that died",
        description="Stop the processes of, and delete the namespaces of, every lab whose "
        "owner process is gone, except the sandbox's (with --all, of every lab). Needs root.",
    )
    clean.add_argument("--all", action="store_true", help="also remove labs of running owners")
    clean.set_defaults(func=_lab_cleanup)
