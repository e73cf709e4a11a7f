"""``vxnet config check|example|reference``: configuration files."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, add_group

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


def _config_check(args: argparse.Namespace) -> int:
    from vxnet.config import ConfigError, load_config, to_json, to_toml

    try:
        config = load_config(args.file, role=args.role)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        count = len(exc.problems)
        print(f"{args.file}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return Exit.BAD_INPUT
    sys.stdout.write(to_json(config) if args.json else to_toml(config))
    return Exit.OK


def _config_example(args: argparse.Namespace) -> int:
    from vxnet.config import example_toml

    sys.stdout.write(example_toml(args.role))
    return Exit.OK


def _config_reference(args: argparse.Namespace) -> int:
    from vxnet.config import reference_markdown

    sys.stdout.write(reference_markdown())
    return Exit.OK


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    config_cmds = add_group(commands, "config", "check and show configuration files")
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
