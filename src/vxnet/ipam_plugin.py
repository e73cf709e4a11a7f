"""``vxnet-ipam``: the CNI IPAM plugin that asks the local vxnet agent for container addresses.

A CNI runtime (or the ``bridge`` plugin, delegating IPAM) executes it with the CNI environment
(``CNI_COMMAND`` ADD, DEL, CHECK or VERSION, ``CNI_CONTAINERID``, ``CNI_IFNAME``, ``CNI_ARGS``)
and the network configuration on standard input. It sends the request as one JSON line to the
agent's unix socket (``ipam.socket`` in the configuration, which the agent writes into its
conflists) and prints the agent's answer: the CNI result for ADD, nothing for DEL and CHECK, or a
CNI error (``{"code", "msg", "details"}`` on standard output, exit status 1).

Start-up matters (a runtime waits for it on every container start), so this module imports only
the standard library's json, os, socket and sys, and nothing of vxnet.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
DEFAULT_SOCKET = "/var/lib/vxnet/agent/ipam.sock"
TIMEOUT = 10.0
MAX_ANSWER = 1 << 20
CODE_INCOMPATIBLE = 1
CODE_ENV = 4
CODE_IO = 5
CODE_DECODE = 6
CODE_TRY_AGAIN = 11


class PluginError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


def _ask(path: str, request: dict[str, Any]) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError as exc:
            raise PluginError(
                CODE_TRY_AGAIN,
                "the vxnet agent is not running on this host",
                f"no socket at {path}",
            ) from exc
        except OSError as exc:
            raise PluginError(
                CODE_TRY_AGAIN,
                "the vxnet agent is not answering on this host",
                f"{path}: {exc.strerror or exc}",
            ) from exc
        sock.sendall(json.dumps(request).encode() + b"\n")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER or chunk.endswith(b"\n"):
                break
    except TimeoutError as exc:
        raise PluginError(
            CODE_TRY_AGAIN, "the vxnet agent did not answer in time", f"{path}: {TIMEOUT:.0f} s"
        ) from exc
    except OSError as exc:
        raise PluginError(CODE_IO, "talking to the vxnet agent failed", f"{path}: {exc}") from exc
    finally:
        sock.close()
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise PluginError(CODE_DECODE, "the vxnet agent's answer is not JSON", path) from exc
    if not isinstance(answer, dict):
        raise PluginError(CODE_DECODE, "the vxnet agent's answer is not an object", path)
    return answer


def _result(version: str, answer: dict[str, Any]) -> dict[str, Any]:
    ips = []
    for ip in answer.get("ips", []):
        entry = {"address": ip["address"], "gateway": ip["gateway"]}
        if version != "1.0.0":
            entry["version"] = "6" if ":" in ip["address"] else "4"
        ips.append(entry)
    return {"cniVersion": version, "ips": ips, "routes": answer.get("routes", []), "dns": {}}


def run(environ: dict[str, str], stdin: str) -> tuple[int, dict[str, Any] | None]:
    """Handle one invocation; the exit status and what to print (``None``: nothing)."""
    command = environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        return 0, {"cniVersion": "1.0.0", "supportedVersions": SUPPORTED}
    version = "1.0.0"
    try:
        if command not in ("ADD", "DEL", "CHECK"):
            raise PluginError(
                CODE_ENV, f"CNI_COMMAND must be ADD, DEL, CHECK or VERSION, not {command!r}"
            )
        try:
            conf = json.loads(stdin)
        except ValueError as exc:
            raise PluginError(
                CODE_DECODE, "the network configuration is not JSON", str(exc)
            ) from exc
        if not isinstance(conf, dict):
            raise PluginError(CODE_DECODE, "the network configuration is not a JSON object")
        version = str(conf.get("cniVersion", "1.0.0"))
        if version not in SUPPORTED:
            raise PluginError(
                CODE_INCOMPATIBLE,
                f"CNI version {version} is not supported",
                f"supported: {', '.join(SUPPORTED)}",
            )
        for name in ("CNI_CONTAINERID", "CNI_IFNAME"):
            if not environ.get(name):
                raise PluginError(CODE_ENV, f"{name} is not set")
        ipam = conf.get("ipam")
        if not isinstance(ipam, dict):
            ipam = {}
        request = {
            "command": command,
            "network": conf.get("name"),
            "container_id": environ["CNI_CONTAINERID"],
            "ifname": environ["CNI_IFNAME"],
            "cni_args": environ.get("CNI_ARGS", ""),
            "runtime_args": conf.get("args") if isinstance(conf.get("args"), dict) else None,
        }
        answer = _ask(str(ipam.get("socket") or DEFAULT_SOCKET), request)
        if not answer.get("ok"):
            raise PluginError(
                int(answer.get("code", 999)), str(answer.get("msg")), str(answer.get("details", ""))
            )
    except PluginError as exc:
        error = {"cniVersion": version, "code": exc.code, "msg": exc.msg}
        if exc.details:
            error["details"] = exc.details
        return 1, error
    if command == "ADD":
        return 0, _result(version, answer)
    return 0, None


def main() -> int:
    status, output = run(dict(os.environ), sys.stdin.read())
    if output is not None:
        sys.stdout.write(json.dumps(output) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
