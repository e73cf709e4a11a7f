"""What the ``vxnet`` commands share: exit statuses, asking an agent's API, running a daemon."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

from vxnet._console import Exit

if TYPE_CHECKING:
    import argparse

__all__ = [
    "AGENT_API",
    "add_address",
    "add_agent_api",
    "add_daemon_options",
    "api_url",
    "daemon_config",
    "fetch",
    "ip_order",
    "printed_as_json",
    "run_daemon",
    "run_unwrapped",
]

AGENT_API = "127.0.0.1:62080"  # agent.listen's default


def daemon_config(path: str, role: Literal["master", "agent"], verbose: bool) -> Any:
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


def run_daemon(
    command: str,
    args: argparse.Namespace,
    role: Literal["master", "agent"],
    run: Any,
    *,
    bad_input: tuple[type[Exception], ...] = (),
    failed: tuple[type[Exception], ...] = (),
) -> int:
    """Run a long-running command (``run(config)`` under trio) until it ends: its exit status.

    ``bad_input`` errors are the file's fault (exit 2, the file named); ``failed`` errors and
    OSError are the machine's (exit 1). A stopped log replica is said so.
    """
    from vxnet.replog import StorageFailure

    machine: tuple[type[Exception], ...] = (OSError, *failed)
    config = daemon_config(args.config, role, args.verbose)
    if config is None:
        return Exit.BAD_INPUT
    try:
        run_unwrapped(run, config)
    except bad_input as exc:
        print(f"{command}: {args.config}: {exc}", file=sys.stderr)
        return Exit.BAD_INPUT
    except StorageFailure as exc:
        print(f"{command}: the log replica stopped: {exc}", file=sys.stderr)
        return Exit.FAILED
    except machine as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return Exit.FAILED
    return Exit.OK


def add_daemon_options(
    parser: argparse.ArgumentParser, role: str, *, required: bool = True
) -> None:
    """``--config`` and ``--verbose`` of a long-running command."""
    parser.add_argument(
        "--config", "-c", required=required, metavar="FILE", help=f"{role} TOML file"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")


def run_unwrapped(fn: Any, *args: Any) -> Any:
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


def fetch(command: str, url: str) -> Any:
    """``fetch_json(url)``, or ``None`` with the reason printed for ``vxnet <command>``."""
    from vxnet.http import ApiError, fetch_json

    try:
        return fetch_json(url)
    except ApiError as exc:
        print(f"vxnet {command}: {exc}", file=sys.stderr)
        return None


def printed_as_json(answer: Any, as_json: bool) -> Exit | None:
    """The exit code when a fetched ``answer`` needs no text: ``Exit.FAILED`` without one,
    ``Exit.OK`` once printed (``as_json``); ``None`` when the caller shows it as text."""
    import json

    if answer is None:
        return Exit.FAILED
    if as_json:
        print(json.dumps(answer, indent=2))
        return Exit.OK
    return None


def api_url(api: str) -> str:
    url = api.rstrip("/")
    return url if "://" in url else f"http://{url}"


def add_agent_api(parser: argparse.ArgumentParser) -> None:
    """The ``--api`` option of the commands that ask a running agent."""
    add_address(parser, "--api", AGENT_API, "the agent's API address (its agent.listen")


def add_address(parser: argparse.ArgumentParser, flag: str, default: str, what: str) -> None:
    """A ``HOST:PORT`` option; ``what`` is its help up to where the default is named."""
    parser.add_argument(
        flag, default=default, metavar="HOST:PORT", help=f"{what}; default {default})"
    )


def ip_order(text: str) -> tuple[int, str]:
    from ipaddress import ip_address

    try:
        return (int(ip_address(text)), text)
    except ValueError:
        return (0, text)
