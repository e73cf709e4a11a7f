"""``vxnet-ipam``: the CNI IPAM plugin that asks the local vxnet agent for container addresses.

A CNI runtime (or the ``bridge`` plugin, delegating IPAM) executes it with the CNI environment
(``CNI_COMMAND`` ADD, DEL, CHECK or VERSION, ``CNI_CONTAINERID``, ``CNI_IFNAME``, ``CNI_ARGS``)
and the network configuration on standard input. The plugin sends the agent, over the agent's
unix socket (``ipam.socket`` in the configuration, which the agent writes into its conflists),
one request line: a JSON array of the command, container id, interface, CNI_ARGS and the whole
configuration text. The agent does the rest (checks, the lease, the CNI result in the version
the configuration asks for) and answers ``<exit status digit><what to print>``; the plugin
prints it and exits with that status.

A runtime waits for this on every container start, so it is kept to what Python cannot avoid:
the agent installs it to run with ``python -I -S`` (no site-packages to scan), and it imports
only the C modules ``_json``, ``_socket`` and ``posix`` (``json``, ``socket`` and ``os`` would
pull in ``re``, ``enum`` and more, doubling the start-up time). VERSION and the errors it finds
itself (no agent, input that is not JSON) it answers alone.
"""

import _socket
import posix
import sys

TYPE_CHECKING = False  # not typing's: importing typing (or __future__) costs start-up time
if TYPE_CHECKING:
    from typing import Any

SUPPORTED = '["0.3.0", "0.3.1", "0.4.0", "1.0.0"]'
DEFAULT_SOCKET = "/var/lib/vxnet/agent/ipam.sock"
TIMEOUT = 10.0
MAX_ANSWER = 1 << 20
CODE_ENV = 4
CODE_IO = 5
CODE_DECODE = 6
CODE_TRY_AGAIN = 11


def _quote(text: str) -> str:
    import _json  # only where JSON is needed: the common path forwards the input as it is

    return str(_json.encode_basestring_ascii(text))


class _Context:
    """What ``_json.make_scanner`` reads from a JSONDecoder: the default decoding."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}  # noqa: RUF012 (the C scanner reads a class attribute)

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name)


def _loads(text: str) -> "Any":
    """``json.loads`` without the ``json`` package (no trailing text allowed)."""
    import _json

    scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed in C
    try:
        value, end = scan(text, _skip(text, 0))
    except StopIteration as exc:
        raise ValueError(f"no JSON value at character {exc.value}") from None
    if _skip(text, end) != len(text):
        raise ValueError(f"extra data at character {end}")
    return value


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _error(version: str, code: int, msg: str, details: str = "") -> tuple[int, str]:
    extra = f', "details": {_quote(details)}' if details else ""
    return 1, f'{{"cniVersion": {_quote(version)}, "code": {code}, "msg": {_quote(msg)}{extra}}}\n'


def _ask(path: str, request: bytes) -> bytes:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(path)
        sock.sendall(request)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_ANSWER:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        sock.close()


def _request(environ: dict[str, str], stdin: str) -> bytes:
    """The request line: a JSON array of the command, container id, interface, CNI_ARGS and
    the configuration text, each as a JSON string (``\\uXXXX`` for all but plain ASCII)."""
    fields = [environ.get(k, "") for k in ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME")]
    fields += [environ.get("CNI_ARGS", ""), stdin]
    return ("[" + ", ".join(_string(f) for f in fields) + "]\n").encode()


_ESCAPES = {0x5C: "\\\\", 0x22: '\\"', 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def _string(text: str) -> str:
    escaped = text.translate(_ESCAPES)
    if escaped.isascii() and escaped.isprintable():
        return f'"{escaped}"'
    return _quote(text)


def run(environ: dict[str, str], stdin: str, socket_path: str | None = None) -> tuple[int, str]:
    """Handle one invocation: the exit status and the text to print.

    ``socket_path``: the agent's socket, when the agent wrote this plugin (then the input is
    passed on unread); else ``ipam.socket`` of the configuration.
    """
    command = environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        return 0, f'{{"cniVersion": "1.0.0", "supportedVersions": {SUPPORTED}}}\n'
    path = socket_path
    if path is None:
        try:
            conf = _loads(stdin)
        except ValueError as exc:
            return _error("1.0.0", CODE_DECODE, "the network configuration is not JSON", str(exc))
        if not isinstance(conf, dict):
            return _error("1.0.0", CODE_DECODE, "the network configuration is not a JSON object")
        ipam = conf.get("ipam")
        path = DEFAULT_SOCKET
        if isinstance(ipam, dict) and ipam.get("socket"):
            path = str(ipam["socket"])
    try:
        answer = _ask(path, _request(environ, stdin))
    except FileNotFoundError:
        return _error(
            _version(stdin),
            CODE_TRY_AGAIN,
            "the vxnet agent is not running on this host",
            f"no socket at {path}",
        )
    except TimeoutError:
        return _error(
            _version(stdin),
            CODE_TRY_AGAIN,
            "the vxnet agent did not answer in time",
            f"{path}: 10 s",
        )
    except OSError as exc:
        return _error(
            _version(stdin),
            CODE_TRY_AGAIN,
            "the vxnet agent is not answering on this host",
            f"{path}: {exc.strerror or exc}",
        )
    if answer[:1] not in (b"0", b"1"):
        return _error(_version(stdin), CODE_IO, "the vxnet agent's answer is malformed", path)
    return int(answer[:1]), answer[1:].decode()


def _version(stdin: str) -> str:
    """The configuration's cniVersion, for an error of the plugin's own."""
    try:
        conf = _loads(stdin)
    except ValueError:
        return "1.0.0"
    return str(conf.get("cniVersion", "1.0.0")) if isinstance(conf, dict) else "1.0.0"


def main(socket_path: str | None = None) -> int:
    environ = {
        k.decode(errors="replace"): v.decode(errors="replace") for k, v in posix.environ.items()
    }
    status, output = run(environ, sys.stdin.read(), socket_path)
    if output:
        sys.stdout.write(output)
    return status


if __name__ == "__main__":
    sys.exit(main())
