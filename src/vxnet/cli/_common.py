"""What the ``vxnet`` commands share: exit statuses, asking an agent's API, running a daemon."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import argparse

__all__ = [
    "AGENT_API",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_OK",
    "add_agent_api",
    "api_url",
    "daemon_config",
    "fetch",
    "ip_order",
    "run_unwrapped",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
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


def api_url(api: str) -> str:
    url = api.rstrip("/")
    return url if "://" in url else f"http://{url}"


def add_agent_api(parser: argparse.ArgumentParser) -> None:
    """The ``--api`` option of the commands that ask a running agent."""
    parser.add_argument(
        "--api",
        default=AGENT_API,
        metavar="HOST:PORT",
        help=f"the agent's API address (its agent.listen; default {AGENT_API})",
    )


def ip_order(text: str) -> tuple[int, str]:
    from ipaddress import ip_address

    try:
        return (int(ip_address(text)), text)
    except ValueError:
        return (0, text)
