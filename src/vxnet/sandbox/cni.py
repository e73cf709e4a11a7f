"""Running a CNI network configuration list, as a container runtime does (for the lab and sandbox).

vxnet itself is not a container runtime; its tests and the sandbox attach lab containers to the
overlay exactly as a runtime would: each plugin of ``<net>.conflist`` is executed with the CNI
environment (``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_PATH``,
``CNI_ARGS``) and its network configuration on standard input (the conflist's ``name`` and
``cniVersion`` added, and the previous plugin's result as ``prevResult``). ADD and CHECK run the
plugins in order, DEL in reverse order (CNI spec 1.0.0). A plugin that fails gives
:class:`CniError` with the plugin's own error code and message.

A runtime then writes the container's ``resolv.conf`` from the result's ``dns``
(:func:`resolv_conf`); a command runs in the container with that file in place of the host's
(:func:`with_resolv_conf`: a private mount namespace, the file bind-mounted over
``/etc/resolv.conf``), as inside a container.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "PLUGIN_DIRS",
    "CniError",
    "find_plugin_dir",
    "resolv_conf",
    "run_conflist",
    "with_resolv_conf",
]

PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
PLUGIN_TIMEOUT = 30.0


class CniError(Exception):
    """A CNI plugin failed; ``code`` is its error code (CNI spec), 0 when it gave none."""

    def __init__(self, plugin: str, code: int, msg: str, details: str = "") -> None:
        self.plugin = plugin
        self.code = code
        self.msg = msg
        self.details = details
        extra = f" ({details})" if details else ""
        super().__init__(f"CNI plugin {plugin}: error {code}: {msg}{extra}")


def resolv_conf(result: Mapping[str, Any]) -> str:
    """The ``resolv.conf`` a runtime writes from an ADD result's ``dns`` (empty without one)."""
    dns = result.get("dns") or {}
    lines = []
    if dns.get("search"):
        lines.append("search " + " ".join(str(d) for d in dns["search"]))
    lines += [f"nameserver {a}" for a in dns.get("nameservers") or ()]
    if dns.get("options"):
        lines.append("options " + " ".join(str(o) for o in dns["options"]))
    return "".join(f"{line}\n" for line in lines)


def with_resolv_conf(argv: Sequence[str], path: str | Path) -> list[str]:
    """``argv`` run with ``path`` as its ``/etc/resolv.conf`` (in a mount namespace of its own,
    so the host's file is untouched)."""
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        str(path),
        *argv,
    ]


def find_plugin_dir(dirs: Sequence[str] = PLUGIN_DIRS) -> str:
    """The first directory that holds the ``bridge`` plugin.

    Raises:
        CniError: None does (code 0, naming the Debian package to install).
    """
    for d in dirs:
        if (Path(d) / "bridge").is_file():
            return d
    raise CniError(
        "bridge",
        0,
        f"no CNI plugins in {' or '.join(dirs)}: install the package containernetworking-plugins",
    )


def run_conflist(
    conflist: Mapping[str, Any],
    command: str,
    container_id: str,
    netns: str,
    *,
    ifname: str = "eth0",
    args: Mapping[str, str] | None = None,
    plugin_dirs: Sequence[str] | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> dict[str, Any]:
    """Run ``command`` (ADD, DEL or CHECK) for every plugin of ``conflist``; ADD's last result.

    Args:
        conflist: The parsed ``.conflist``.
        command: ``ADD``, ``DEL`` or ``CHECK``.
        container_id: ``CNI_CONTAINERID``.
        netns: The container's network namespace file (``CNI_NETNS``).
        ifname: The interface to create in the container.
        args: ``CNI_ARGS`` as key/value pairs (``IgnoreUnknown=1`` is added).
        plugin_dirs: ``CNI_PATH``, where the plugins are looked for in order (default: the
            directory of :func:`find_plugin_dir`).
        wrap: Turns a plugin's argv into the argv to run (e.g. a lab host's ``nsenter``).

    Raises:
        CniError: A plugin failed or printed something that is not a CNI result.
        ValueError: A bad command or conflist.
    """
    if command not in ("ADD", "DEL", "CHECK"):
        raise ValueError(f"CNI command must be ADD, DEL or CHECK, not {command!r}")
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ValueError("the conflist has no plugins")
    dirs = list(plugin_dirs) if plugin_dirs else [find_plugin_dir()]
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": ":".join(dirs),
    }
    if args:
        # as Kubernetes and Mesos do: plugins refuse arguments they do not know without it
        pairs = {"IgnoreUnknown": "1", **args}
        env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in pairs.items())
    order = list(reversed(plugins)) if command == "DEL" else list(plugins)
    result: dict[str, Any] = {}
    for plugin in order:
        config = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
        if result and command == "ADD":
            config["prevResult"] = result
        kind = str(plugin["type"])
        found = [Path(d) / kind for d in dirs if (Path(d) / kind).exists()]
        if not found:
            raise CniError(kind, 0, f"no plugin {kind!r} in CNI_PATH {env['CNI_PATH']}")
        argv = [str(found[0])]
        done = subprocess.run(
            wrap(argv) if wrap else argv,
            input=json.dumps(config),
            capture_output=True,
            text=True,
            env=env,
            timeout=PLUGIN_TIMEOUT,
            check=False,
        )
        answer: Any = None
        if done.stdout.strip():
            try:
                answer = json.loads(done.stdout)
            except ValueError:
                answer = None
        if done.returncode != 0:
            if isinstance(answer, dict):
                raise CniError(
                    kind,
                    int(answer.get("code", 0)),
                    str(answer.get("msg", "")),
                    str(answer.get("details", "")),
                )
            raise CniError(
                kind, 0, (done.stderr or done.stdout).strip() or f"exit {done.returncode}"
            )
        if command == "ADD":
            if not isinstance(answer, dict):
                raise CniError(kind, 0, f"ADD printed no result: {done.stdout[:200]!r}")
            result = answer
    return result
