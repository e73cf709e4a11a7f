"""Loading TOML into the configuration model, and every check a file must pass.

Rules (each names the key it is about; all problems of a file are reported together):

* Structure: unknown keys are rejected (with the nearest known key suggested), required keys must
  be present, and every value must have the right TOML type.
* Addresses: networks are ``address/length`` with no host bits set, of the right family.
* Networks: a name is 1-13 characters of ``[A-Za-z0-9_.-]`` starting with a letter or digit (the
  bridges are ``m-<name>`` and ``d-<name>`` and Linux allows 15 characters); host, bridge, default
  and none are reserved (Docker owns them); names are unique (compared without case); a network
  has an IPv4 or an IPv6 subnet or both; an agent prefix is longer than its network's and short
  enough that each half holds a gateway and a container; no two subnets overlap, and none
  overlaps a VTEP subnet.
* VTEPs: the VTEP subnet is /8 to /30 (a MAC is the OUI plus the low 24 bits of the VTEP IP, so a
  larger subnet would give two VTEPs one MAC, and /31 or /32 leave no usable address); the OUI is a
  unicast MAC with its low 24 bits zero; the VNI fits 24 bits; the port is a UDP port.
* MTU: the overlay MTU is at least 552, at most ``vtep_mtu - 50`` (VxLAN over IPv4 adds 50 bytes),
  and at least 1280 when a network carries IPv6 (the kernel turns IPv6 off below that).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import re
import tomllib
import types
import typing
from dataclasses import dataclass
from ipaddress import (
    AddressValueError,
    IPv4Address,
    IPv4Network,
    IPv6Network,
    NetmaskValueError,
    ip_address,
    ip_network,
)
from pathlib import Path
from typing import Any, Literal, TypeVar

from vxnet.config._model import (
    AgentConfig,
    AgentSettings,
    DnsSettings,
    GossipSettings,
    LogSettings,
    MasterConfig,
    MasterSettings,
    NetworkConfig,
    Overlay,
    TlsSettings,
    toml_key,
)

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "Role",
    "load_config",
    "overlapping_pairs",
    "parse_config",
    "parse_hostport",
    "parse_mac",
    "port_spec_problem",
]

Role = Literal["master", "agent"]
_Net = TypeVar("_Net", IPv4Network, IPv6Network)

RESERVED_NAMES = ("host", "bridge", "default", "none")
MAX_NAME_LENGTH = 13  # Linux allows 15 characters; "m-" and "d-" take two.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MIN_OVERLAY_MTU = 552
MIN_IPV6_MTU = 1280
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VxLAN 8
MAX_VNI = (1 << 24) - 1


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration file.

    Attributes:
        key: Dotted path of the key, such as ``network.overlays[1].name``; empty for the whole file.
        message: What is wrong, in words that say how to fix it.
    """

    key: str
    message: str


class ConfigError(Exception):
    """A configuration file that cannot be used; carries every problem found in it."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        """One ``source: key: message`` line per problem."""
        return [
            f"{self.source}: {p.key}: {p.message}" if p.key else f"{self.source}: {p.message}"
            for p in self.problems
        ]


def load_config(path: str | Path, role: Role | None = None) -> MasterConfig | AgentConfig:
    """Read and validate a configuration file.

    Args:
        path: The TOML file.
        role: ``"master"`` or ``"agent"``; ``None`` tells the role from the file's tables.

    Raises:
        ConfigError: The file cannot be read, is not TOML, or breaks any rule (all are listed).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [ConfigProblem("", f"cannot read the file: {exc}")]) from exc
    return parse_config(text, source=source, role=role)


def parse_config(text: str, *, source: str, role: Role | None = None) -> MasterConfig | AgentConfig:
    """Validate configuration text; see :func:`load_config`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("", f"not valid TOML: {exc}")]) from exc
    if role is None:
        role = _tell_role(data, source)
    loader = _Loader()
    config: MasterConfig | AgentConfig
    if role == "master":
        master: MasterConfig = loader.build(MasterConfig, data, "")
        _check_master(master.master, "master", loader)
        _check_network(master.network, "network", loader)
        _check_log(master.log, "log", loader)
        _check_gossip(master.gossip, "gossip", loader)
        _check_tls(master.tls, "tls", loader)
        config = master
    else:
        agent: AgentConfig = loader.build(AgentConfig, data, "")
        _check_agent(agent.agent, "agent", loader)
        _check_gossip(agent.gossip, "gossip", loader)
        _check_dns(agent.dns, "dns", loader)
        _check_tls(agent.tls, "tls", loader)
        config = agent
    if loader.problems:
        raise ConfigError(source, loader.problems)
    return config


def _tell_role(data: dict[str, Any], source: str) -> Role:
    has_master = "master" in data or "network" in data
    has_agent = "agent" in data
    if has_master and has_agent:
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    "",
                    "holds both master ([master], [network]) and agent ([agent]) "
                    "tables; use one file per role",
                )
            ],
        )
    if has_agent:
        return "agent"
    if has_master:
        return "master"
    raise ConfigError(
        source,
        [
            ConfigProblem(
                "",
                "cannot tell whether this is a master or an agent configuration: "
                "it needs a [master] or [network] table, or an [agent] table",
            )
        ],
    )


# --- structure and types ------------------------------------------------------------------------

_TOML_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a float",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}


def _toml_type(value: object) -> str:
    for tp, name in _TOML_TYPE_NAMES.items():
        if type(value) is tp:
            return name
    return f"a {type(value).__name__}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Loader:
    """Builds dataclasses from TOML data, recording problems and the keys that failed."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []
        self.failed: set[str] = set()

    def fail(self, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(key, message))
        self.failed.add(key)

    def ok(self, *keys: str) -> bool:
        """Whether none of ``keys`` (or anything under them) failed to load."""
        return not any(
            f == k or f.startswith((k + ".", k + "[")) for k in keys for f in self.failed
        )

    def build(self, cls: type[Any], data: object, path: str) -> Any:
        if not isinstance(data, dict):
            self.fail(path, f"expected a table, got {_toml_type(data)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {toml_key(f): f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                near = difflib.get_close_matches(key, list(fields), n=1) or [
                    f for f in fields if key in f or f in key
                ]
                hint = f" (did you mean {' or '.join(map(repr, near[:3]))}?)" if near else ""
                known = ", ".join(fields)
                self.fail(_join(path, key), f"unknown key{hint}; known keys here: {known}")
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            key = _join(path, name)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if name in data:
                converted = self.convert(data[name], hints[f.name], key)
            else:
                converted = _FAILED
                if required:
                    self.fail(key, "required key is missing")
            if converted is not _FAILED:
                kwargs[f.name] = converted
            elif required:
                # Stand in for the broken value; every rule that reads this key skips it.
                kwargs[f.name] = _PLACEHOLDERS[hints[f.name]]
        return cls(**kwargs)

    def convert(self, value: object, tp: Any, key: str) -> Any:
        origin = typing.get_origin(tp)
        if origin is types.UnionType:
            (inner,) = (a for a in typing.get_args(tp) if a is not type(None))
            return self.convert(value, inner, key)
        if origin is tuple:
            item_type = typing.get_args(tp)[0]
            if not isinstance(value, list):
                self.fail(key, f"expected an array, got {_toml_type(value)}")
                return _FAILED
            items = [self.convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
            if any(i is _FAILED for i in items):
                self.failed.add(key)  # positions would shift: rules across items skip this array
                return _FAILED
            return tuple(items)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            built = self.build(tp, value, key)
            return _FAILED if built is None else built
        if tp is bool:
            if isinstance(value, bool):
                return value
            self.fail(key, f"expected true or false, got {_toml_type(value)}")
            return _FAILED
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            self.fail(key, f"expected an integer, got {_toml_type(value)}")
            return _FAILED
        if tp is str:
            if isinstance(value, str):
                return value
            self.fail(key, f"expected a string, got {_toml_type(value)}")
            return _FAILED
        if tp in (IPv4Network, IPv6Network):
            return self.network(value, tp, key)
        if tp is IPv4Address:
            return self.address(value, key)
        raise TypeError(f"no loader for {tp!r} at {key}")  # a bug in the model, not in the file

    def network(self, value: object, tp: type[IPv4Network | IPv6Network], key: str) -> Any:
        family = "IPv4" if tp is IPv4Network else "IPv6"
        sample = "9.0.0.0/8" if tp is IPv4Network else "fd01:b::/64"
        if not isinstance(value, str):
            self.fail(
                key, f"expected an {family} network such as {sample!r}, got {_toml_type(value)}"
            )
            return _FAILED
        if "/" not in value:
            self.fail(
                key,
                f"{value!r} has no prefix length; write it as address/length, such as {sample!r}",
            )
            return _FAILED
        try:
            return tp(value, strict=True)
        except ValueError as exc:
            try:
                loose = tp(value, strict=False)
            except (AddressValueError, NetmaskValueError, ValueError):
                other = IPv6Network if tp is IPv4Network else IPv4Network
                try:
                    other(value, strict=False)
                except ValueError:
                    self.fail(key, f"{value!r} is not a valid {family} network: {exc}")
                else:
                    other_family = "IPv6" if tp is IPv4Network else "IPv4"
                    self.fail(
                        key, f"{value!r} is an {other_family} network; this key takes {family}"
                    )
                return _FAILED
            self.fail(key, f"{value!r} has host bits set; did you mean '{loose}'?")
            return _FAILED

    def address(self, value: object, key: str) -> Any:
        if not isinstance(value, str):
            self.fail(
                key, f"expected an IPv4 address such as '198.18.0.11', got {_toml_type(value)}"
            )
            return _FAILED
        try:
            return IPv4Address(value)
        except AddressValueError:
            self.fail(key, f"{value!r} is not an IPv4 address")
            return _FAILED


_FAILED: Any = object()
_PLACEHOLDERS: dict[Any, Any] = {str: "", int: 0}


# --- rules --------------------------------------------------------------------------------------


def parse_hostport(text: str, *, any_port: bool = False) -> tuple[str, int]:
    """Split ``host:port`` or ``[ipv6]:port``; with ``any_port``, port 0 (pick one) is allowed.

    Raises:
        ValueError: With a message saying what is wrong.
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not [address]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} has no port; write it as host:port")
        if ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets, as [address]:port")
    if not host:
        raise ValueError(f"{text!r} has no host")
    low = 0 if any_port else 1
    if not port_text.isdigit() or not low <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from {low} to 65535")
    return host, int(port_text)


def parse_mac(text: str) -> bytes:
    """Parse a MAC written as six hex octets separated by ``:`` or ``-``.

    Raises:
        ValueError: The text is not a MAC address.
    """
    parts = re.split(r"[:-]", text)
    if len(parts) != 6 or not all(re.fullmatch(r"[0-9A-Fa-f]{2}", p) for p in parts):
        raise ValueError(f"{text!r} is not a MAC address such as '70:B3:D5:00:00:00'")
    return bytes(int(p, 16) for p in parts)


def _check_listen(value: str, key: str, loader: _Loader, *, any_port: bool = False) -> None:
    try:
        host, _ = parse_hostport(value, any_port=any_port)
        ip_address(host)
    except ValueError as exc:
        loader.fail(key, f"{exc} (the host must be an IP address to listen on)")


def _check_dir(value: str, key: str, loader: _Loader) -> None:
    if not value.startswith("/"):
        loader.fail(key, f"{value!r} is not an absolute path")


def _check_master(m: MasterSettings, path: str, loader: _Loader) -> None:
    if loader.ok(f"{path}.listen"):
        _check_listen(m.listen, f"{path}.listen", loader)
    if loader.ok(f"{path}.data_dir"):
        _check_dir(m.data_dir, f"{path}.data_dir", loader)
    _check_token(m.token, f"{path}.token", loader)


def _check_addresses(entries: tuple[str, ...], key: str, loader: _Loader, *, unique: bool) -> None:
    """Each entry is host:port; with ``unique``, none is listed twice."""
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        try:
            parse_hostport(entry)
        except ValueError as exc:
            loader.fail(f"{key}[{i}]", str(exc))
        if unique and entry in seen:
            loader.fail(f"{key}[{i}]", f"{entry!r} is listed twice (also {key}[{seen[entry]}])")
        seen.setdefault(entry, i)


def _check_agent(a: AgentSettings, path: str, loader: _Loader) -> None:
    key = f"{path}.masters"
    if loader.ok(key):
        if not a.masters:
            loader.fail(key, "lists no master; the agent needs at least one to register with")
        _check_addresses(a.masters, key, loader, unique=True)
    key = f"{path}.ip"
    if (
        a.ip is not None
        and loader.ok(key)
        and (a.ip.is_unspecified or a.ip.is_multicast or a.ip == IPv4Address("255.255.255.255"))
    ):
        loader.fail(
            key, f"{a.ip} cannot be a tunnel endpoint; give the agent's own unicast address"
        )
    if loader.ok(f"{path}.listen"):
        _check_listen(a.listen, f"{path}.listen", loader)
    for name in ("state_dir", "cni_dir"):
        if loader.ok(f"{path}.{name}"):
            _check_dir(getattr(a, name), f"{path}.{name}", loader)
    _check_token(a.master_token, f"{path}.master_token", loader)


DOMAIN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _check_dns(d: DnsSettings, path: str, loader: _Loader) -> None:
    key = f"{path}.listen"
    if loader.ok(key):
        if d.enabled and not d.listen:
            loader.fail(key, "lists no address; give one or set dns.enabled = false")
        for i, entry in enumerate(d.listen):
            _check_listen(entry, f"{key}[{i}]", loader, any_port=True)
    key = f"{path}.upstreams"
    if loader.ok(key):
        for i, entry in enumerate(d.upstreams):
            _check_listen(entry, f"{key}[{i}]", loader)
            if entry in d.listen:
                loader.fail(
                    f"{key}[{i}]", f"{entry} is one of dns.listen: vxnet would ask itself (a loop)"
                )
    key = f"{path}.suffix"
    if loader.ok(key):
        labels = d.suffix.rstrip(".").split(".")
        if len(d.suffix) > 200 or not all(DOMAIN_LABEL.fullmatch(label) for label in labels):
            loader.fail(
                key,
                f"{d.suffix!r} is not a domain name (lower-case labels of letters, digits and '-')",
            )
    key = f"{path}.container_addresses"
    if loader.ok(key):
        for i, entry in enumerate(d.container_addresses):
            _check_container_address(entry, d.container_addresses[:i], f"{key}[{i}]", loader)
    key = f"{path}.search"
    if loader.ok(key):
        for i, domain in enumerate(d.search):
            labels = domain.rstrip(".").split(".")
            if len(domain) > 253 or not all(DOMAIN_LABEL.fullmatch(label) for label in labels):
                loader.fail(f"{key}[{i}]", f"{domain!r} is not a domain name")
        if len(d.search) > 6:
            loader.fail(key, f"lists {len(d.search)} domains; resolv.conf takes at most 6")
    key = f"{path}.forward_clients"
    if loader.ok(key):
        for i, entry in enumerate(d.forward_clients):
            try:
                ip_network(entry)
            except ValueError as exc:
                loader.fail(f"{key}[{i}]", f"{exc} (give a network such as 10.0.0.0/8)")
    key = f"{path}.rate_limit"
    if loader.ok(key) and not 0 <= d.rate_limit <= 10_000_000:
        loader.fail(key, f"must be 0 (off) to 10000000 answers per second, got {d.rate_limit}")
    key = f"{path}.rate_limit_slip"
    if loader.ok(key) and not 0 <= d.rate_limit_slip <= 100:
        loader.fail(key, f"must be 0 to 100, got {d.rate_limit_slip}")
    key = f"{path}.workers"
    if loader.ok(key) and d.workers is not None and not 0 <= d.workers <= 64:
        loader.fail(key, f"must be 0 (answer in the agent) to 64 processes, got {d.workers}")


def _check_container_address(
    entry: str, earlier: tuple[str, ...], key: str, loader: _Loader
) -> None:
    try:
        address = ip_address(entry)
    except ValueError:
        loader.fail(key, f"{entry!r} is not an IP address (give one such as 198.51.100.1)")
        return
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        loader.fail(
            key, f"{entry} is not an address containers can reach (loopback, any, multicast)"
        )
    elif any(ip_address(e) == address for e in earlier if _is_ip(e)):
        loader.fail(key, f"{entry} is listed twice")


def _is_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _check_token(token: str | None, key: str, loader: _Loader) -> None:
    if token is None or not loader.ok(key):
        return
    if len(token) < 8:
        loader.fail(key, "too short: use at least 8 characters")
    elif not token.isascii() or not token.isprintable() or " " in token:
        loader.fail(key, "must be printable ASCII without spaces")


MAX_LOG_REPLICAS = 255


def _check_tls(tls: TlsSettings, path: str, loader: _Loader) -> None:
    """All three files or none; each one readable."""
    files = {"ca": tls.ca, "cert": tls.cert, "key": tls.key}
    given = [name for name, value in files.items() if value is not None]
    if given and len(given) < len(files):
        missing = [f"{path}.{name}" for name in files if name not in given]
        loader.fail(f"{path}.{given[0]}", f"needs {' and '.join(missing)} too (all three, or none)")
        return
    for name, value in files.items():
        if value is not None and loader.ok(f"{path}.{name}"):
            try:
                with open(value, "rb"):
                    pass
            except OSError as exc:
                loader.fail(f"{path}.{name}", f"cannot read {value}: {exc.strerror or exc}")


def _check_log(log: LogSettings, path: str, loader: _Loader) -> None:
    if loader.ok(f"{path}.listen"):
        _check_listen(log.listen, f"{path}.listen", loader)
    key = f"{path}.replicas"
    replicas_ok = loader.ok(key)
    if replicas_ok:
        _check_addresses(log.replicas, key, loader, unique=True)
        if len(log.replicas) > MAX_LOG_REPLICAS:
            loader.fail(key, f"{len(log.replicas)} replicas; at most {MAX_LOG_REPLICAS}")
    qkey = f"{path}.quorum"
    if loader.ok(qkey) and replicas_ok:
        n = len(log.replicas) or 1
        if log.quorum < 1:
            loader.fail(qkey, f"{log.quorum} is not a quorum: at least 1")
        elif n != 2 * log.quorum - 1:
            if n % 2 == 1:
                hint = f"{n} replica{'s' if n != 1 else ''} need quorum {n // 2 + 1}"
            else:
                hint = f"{n} replicas cannot form a majority quorum: use {n - 1} or {n + 1}"
            loader.fail(
                qkey,
                f"quorum {log.quorum} does not fit {n} replica"
                f"{'s' if n != 1 else ''} (replicas must number 2 * quorum - 1; {hint})",
            )
    akey = f"{path}.advertise"
    if log.replicas and replicas_ok and loader.ok(akey, f"{path}.listen"):
        me = log.advertise if log.advertise is not None else log.listen
        if me not in log.replicas:
            which = "log.advertise" if log.advertise is not None else "log.listen"
            loader.fail(
                akey,
                f"{which} {me!r} is not one of log.replicas, so this master cannot "
                "tell which replica it is; set log.advertise to its entry",
            )


GOSSIP_PROFILES = ("lan", "local")
MAX_RECORD_GRACE = 86400
KEY_SIZES = (16, 24, 32)


def _check_gossip(g: GossipSettings, path: str, loader: _Loader) -> None:
    key = f"{path}.name"
    if (
        g.name is not None
        and loader.ok(key)
        and (
            not g.name or len(g.name) > 128 or not g.name.isprintable() or g.name != g.name.strip()
        )
    ):
        loader.fail(
            key,
            f"{g.name!r} is not a usable node name: 1-128 printable characters, "
            "no leading or trailing space",
        )
    if loader.ok(f"{path}.bind"):
        _check_listen(g.bind, f"{path}.bind", loader, any_port=True)
    key = f"{path}.record_grace"
    if loader.ok(key) and not 1 <= g.record_grace <= MAX_RECORD_GRACE:
        loader.fail(key, f"must be 1 to {MAX_RECORD_GRACE} seconds, got {g.record_grace}")
    key = f"{path}.advertise"
    if g.advertise is not None and loader.ok(key):
        try:
            host, _ = parse_hostport(g.advertise)
            if ip_address(host).is_unspecified:
                raise ValueError(f"{g.advertise!r}: others cannot reach an unspecified address")
        except ValueError as exc:
            loader.fail(key, f"{exc} (give this node's own IP address and port)")
    key = f"{path}.seeds"
    if loader.ok(key):
        _check_addresses(g.seeds, key, loader, unique=False)
    key = f"{path}.keys"
    if loader.ok(key):
        for i, text in enumerate(g.keys):
            try:
                raw = base64.b64decode(text, validate=True)
            except binascii.Error:
                loader.fail(f"{key}[{i}]", "is not base64 (use the output of `serf keygen`)")
                continue
            if len(raw) not in KEY_SIZES:
                loader.fail(
                    f"{key}[{i}]", f"decodes to {len(raw)} bytes; an AES key has 16, 24 or 32"
                )
    key = f"{path}.profile"
    if loader.ok(key) and g.profile not in GOSSIP_PROFILES:
        loader.fail(key, f"{g.profile!r} is not a profile; use one of {', '.join(GOSSIP_PROFILES)}")


def _check_range(value: int, low: int, high: int, key: str, what: str, loader: _Loader) -> bool:
    if loader.ok(key) and not low <= value <= high:
        loader.fail(key, f"{value} is out of range: {what} must be from {low} to {high}")
        return False
    return loader.ok(key)


def _check_network(n: NetworkConfig, path: str, loader: _Loader) -> None:
    def k(name: str) -> str:
        return f"{path}.{name}"

    if loader.ok(k("vtep_subnet")):
        length = n.vtep_subnet.prefixlen
        if length < 8:
            loader.fail(
                k("vtep_subnet"),
                f"/{length} is too large: a VTEP MAC is the OUI plus the "
                "low 24 bits of the VTEP IP, so two VTEPs would share a MAC; use /8 or "
                "longer",
            )
        elif length > 30:
            loader.fail(
                k("vtep_subnet"),
                f"/{length} is too small: it leaves no usable VTEP address; use /30 or shorter",
            )
    if loader.ok(k("vtep_subnet6")) and n.vtep_subnet6.prefixlen > 126:
        loader.fail(
            k("vtep_subnet6"),
            f"/{n.vtep_subnet6.prefixlen} is too small: it leaves no "
            "usable VTEP address; use /126 or shorter",
        )
    if loader.ok(k("vtep_mac_oui")):
        try:
            oui = parse_mac(n.vtep_mac_oui)
        except ValueError as exc:
            loader.fail(k("vtep_mac_oui"), str(exc))
        else:
            if oui[3:] != b"\0\0\0":
                loader.fail(
                    k("vtep_mac_oui"),
                    f"{n.vtep_mac_oui!r}: the low 24 bits must be zero "
                    "(they are filled from the VTEP IP)",
                )
            if oui[0] & 1:
                loader.fail(
                    k("vtep_mac_oui"),
                    f"{n.vtep_mac_oui!r} is a multicast MAC (lowest bit "
                    "of the first octet set); VTEP MACs must be unicast",
                )
    _check_range(n.vni, 1, MAX_VNI, k("vni"), "a VxLAN VNI", loader)
    _check_range(n.vxlan_port, 1, 65535, k("vxlan_port"), "a UDP port", loader)
    vtep_mtu_ok = _check_range(n.vtep_mtu, 68, 65535, k("vtep_mtu"), "an MTU", loader)
    mtu_key = k("overlay_mtu")
    if loader.ok(mtu_key):
        if n.overlay_mtu < MIN_OVERLAY_MTU:
            loader.fail(
                mtu_key, f"{n.overlay_mtu} is below the minimum overlay MTU {MIN_OVERLAY_MTU}"
            )
        elif vtep_mtu_ok and n.overlay_mtu > n.vtep_mtu - VXLAN_OVERHEAD:
            loader.fail(
                mtu_key,
                f"{n.overlay_mtu} is above vtep_mtu - {VXLAN_OVERHEAD} = "
                f"{n.vtep_mtu - VXLAN_OVERHEAD}: VxLAN encapsulation adds "
                f"{VXLAN_OVERHEAD} bytes",
            )
        elif n.overlay_mtu < MIN_IPV6_MTU and any(o.subnet6 for o in n.overlays):
            loader.fail(
                mtu_key,
                f"{n.overlay_mtu} is below {MIN_IPV6_MTU}, the minimum MTU of "
                "IPv6, and a network has an IPv6 subnet",
            )
    if k("overlays") not in loader.failed:
        _check_overlays(n, k("overlays"), loader)
        if loader.ok(k("allow")):
            _check_allow(n, k("allow"), loader)


def _check_allow(n: NetworkConfig, path: str, loader: _Loader) -> None:
    names = {o.name for o in n.overlays}
    known = ", ".join(sorted(names))
    seen: dict[tuple[str, str], int] = {}
    for i, a in enumerate(n.allow):
        base = f"{path}[{i}]"
        for key, value in (("from", a.source), ("to", a.to)):
            if value not in names:
                loader.fail(f"{base}.{key}", f"no network {value!r} (the networks: {known})")
        if a.source == a.to and a.source in names:
            loader.fail(base, f"{a.source} to itself: a network always reaches itself")
        pair = (a.source, a.to)
        if pair in seen:
            loader.fail(base, f"{a.source} -> {a.to} is listed twice (also {path}[{seen[pair]}])")
        seen.setdefault(pair, i)
        for j, spec in enumerate(a.ports):
            problem = port_spec_problem(spec)
            if problem:
                loader.fail(f"{base}.ports[{j}]", problem)


PROTOCOLS = ("tcp", "udp", "sctp")


def port_spec_problem(spec: str) -> str | None:
    """What is wrong with a port spec (``tcp/5432``, ``udp/53``, ``tcp/8000-8080``, ``tcp``);
    None when it is good."""
    protocol, _, ports = spec.partition("/")
    if protocol not in PROTOCOLS:
        return f"{spec!r}: give {', '.join(PROTOCOLS)}, a slash and a port or range (tcp/5432)"
    if not ports:
        return None
    low, dash, high = ports.partition("-")
    bounds = [low, high] if dash else [low]
    if not all(b.isdigit() and 1 <= int(b) <= 65535 for b in bounds):
        return f"{spec!r}: ports are 1 to 65535 (tcp/5432 or tcp/8000-8080)"
    if dash and int(low) > int(high):
        return f"{spec!r}: the range runs backwards"
    return None


def _check_overlays(n: NetworkConfig, path: str, loader: _Loader) -> None:
    if not n.overlays:
        loader.fail(path, "no virtual network is defined; add at least one [[network.overlays]]")
        return
    names: dict[str, int] = {}
    v4: list[tuple[str, IPv4Network]] = [("network.vtep_subnet", n.vtep_subnet)]
    v6: list[tuple[str, IPv6Network]] = [("network.vtep_subnet6", n.vtep_subnet6)]
    for i, o in enumerate(n.overlays):
        base = f"{path}[{i}]"
        _check_overlay(o, base, loader)
        folded = o.name.lower()
        if folded in names:
            first = n.overlays[names[folded]].name
            loader.fail(
                f"{base}.name",
                f"duplicate network name {o.name!r} (also {path}"
                f"[{names[folded]}] {first!r}; names are compared without case)",
            )
        names.setdefault(folded, i)
        if o.subnet is not None:
            v4.append((f"{base}.subnet", o.subnet))
        if o.subnet6 is not None:
            v6.append((f"{base}.subnet6", o.subnet6))
    _report_overlaps(v4, loader)
    _report_overlaps(v6, loader)


def _report_overlaps(keyed: list[tuple[str, _Net]], loader: _Loader) -> None:
    usable = [(key, net) for key, net in keyed if loader.ok(key)]
    for a, b in overlapping_pairs([net for _, net in usable]):
        (key_a, net_a), (key_b, net_b) = usable[a], usable[b]
        loader.fail(key_b, f"{net_b} overlaps {net_a} ({key_a})")


def _check_overlay(o: Overlay, base: str, loader: _Loader) -> None:
    key = f"{base}.name"
    if loader.ok(key):
        if not o.name:
            loader.fail(key, "must not be empty")
        elif len(o.name) > MAX_NAME_LENGTH:
            loader.fail(
                key,
                f"{o.name!r} is {len(o.name)} characters long; at most "
                f"{MAX_NAME_LENGTH} fit in the bridge names m-<name> and d-<name> "
                "(Linux allows 15)",
            )
        elif not NAME_PATTERN.fullmatch(o.name):
            loader.fail(
                key,
                f"{o.name!r} is not a valid interface-name stem: use letters, "
                "digits, '_', '.' and '-', starting with a letter or digit",
            )
        elif o.name.lower() in RESERVED_NAMES:
            loader.fail(
                key,
                f"{o.name!r} is reserved (Docker owns the networks {', '.join(RESERVED_NAMES)})",
            )
    for i, entry in enumerate(o.allow_hosts):
        try:
            ip_network(entry)
        except ValueError as exc:
            loader.fail(
                f"{base}.allow_hosts[{i}]", f"{exc} (give a network such as 198.51.100.0/24)"
            )
    if o.subnet is None and o.subnet6 is None and loader.ok(f"{base}.subnet", f"{base}.subnet6"):
        loader.fail(base, "has neither subnet nor subnet6; give at least one")
    for net, prefix_key, net_key, longest in (
        (o.subnet, "prefix", "subnet", 29),
        (o.subnet6, "prefix6", "subnet6", 125),
    ):
        if net is None or not loader.ok(f"{base}.{net_key}", f"{base}.{prefix_key}"):
            continue
        prefix = getattr(o, prefix_key)
        if prefix <= net.prefixlen:
            loader.fail(
                f"{base}.{prefix_key}",
                f"/{prefix} is not longer than the network's "
                f"/{net.prefixlen} ({net}); an agent's subnet must be a part of it",
            )
        elif prefix > longest:
            loader.fail(
                f"{base}.{prefix_key}",
                f"/{prefix} is too long: each half of an agent's "
                f"subnet needs a gateway and at least one container; use /{longest} or "
                "shorter",
            )


def overlapping_pairs(nets: list[_Net]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of networks that share at least one address."""
    return [(i, j) for j in range(len(nets)) for i in range(j) if nets[i].overlaps(nets[j])]
