"""What the ``vxnet`` commands share: exit statuses, asking an agent's API, running a daemon."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

from vxnet._console import Exit

if TYPE_CHECKING:
    import argparse

    from vxnet.pki import Tls

__all__ = [
    "AGENT_API",
    "add_address",
    "add_agent_api",
    "add_daemon_options",
    "add_tls_options",
    "api_url",
    "client_tls",
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


def fetch(command: str, url: str, tls: Tls | None = None, server_role: str | None = None) -> Any:
    """``fetch_json(url)`` (over HTTPS with ``tls``), or ``None`` with the reason printed for
    ``vxnet <command>``."""
    from vxnet.http import ApiError, fetch_json

    try:
        return fetch_json(url, tls=None if tls is None else tls.client, server_role=server_role)
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


def api_url(api: str, tls: Tls | None = None) -> str:
    url = api.rstrip("/")
    return url if "://" in url else f"{'http' if tls is None else 'https'}://{url}"


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """``--ca``, ``--cert`` and ``--key``: the certificate a client command presents."""
    tls = parser.add_argument_group("TLS (all three, or none; default: the config's [tls])")
    tls.add_argument("--ca", metavar="FILE", help="the cluster CA's certificate (ca.pem)")
    tls.add_argument("--cert", metavar="FILE", help="this client's certificate (an operator's)")
    tls.add_argument("--key", metavar="FILE", help="its key")


def client_tls(args: argparse.Namespace, command: str, settings: Any = None) -> Tls | None:
    """The TLS of a client command: from ``--ca/--cert/--key``, else from ``settings`` (a
    config's ``[tls]``), else ``None`` (plain).

    Raises:
        SystemExit: Only some of the three flags, or files that are not a CA, a certificate
            and its key (the reason printed first).
    """
    from pathlib import Path

    from vxnet.pki import PkiError, Tls, TlsFiles

    flags = {"--ca": args.ca, "--cert": args.cert, "--key": args.key}
    given = [flag for flag, value in flags.items() if value]
    if given and len(given) < len(flags):
        missing = " and ".join(flag for flag in flags if flag not in given)
        print(f"vxnet {command}: {given[0]} needs {missing} too", file=sys.stderr)
        raise SystemExit(Exit.BAD_INPUT)
    if given:
        files = TlsFiles(Path(args.ca), Path(args.cert), Path(args.key))
    elif settings is not None and settings.ca is not None:
        files = TlsFiles(Path(settings.ca), Path(settings.cert), Path(settings.key))
    else:
        return None
    try:
        return Tls(files)
    except PkiError as exc:
        print(f"vxnet {command}: {exc}", file=sys.stderr)
        raise SystemExit(Exit.BAD_INPUT) from None


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
