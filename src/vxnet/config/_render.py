"""Writing configuration out: effective config as TOML or JSON, commented examples, reference.

The example files in ``configs/`` and the configuration reference in the README are produced here
from the dataclasses of :mod:`vxnet.config._model`; tests compare the committed copies with what
this module writes, so documentation and code cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
import typing
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Any

import tomli_w

from vxnet.config._model import AgentConfig, MasterConfig, toml_key

__all__ = ["example_toml", "reference_markdown", "to_data", "to_json", "to_toml"]

ROLES: dict[str, type[MasterConfig] | type[AgentConfig]] = {
    "master": MasterConfig,
    "agent": AgentConfig,
}


def to_data(obj: Any) -> Any:
    """Plain data (dicts, lists, strings, numbers, ``None``) for a config object."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {toml_key(f): to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_data(v) for v in obj]
    if isinstance(obj, IPv4Network | IPv6Network | IPv4Address):
        return str(obj)
    return obj


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_none(v) for v in data]
    return data


def to_toml(config: MasterConfig | AgentConfig) -> str:
    """The effective configuration as TOML (unset optional keys are left out)."""
    return tomli_w.dumps(_drop_none(to_data(config)))


def to_json(config: MasterConfig | AgentConfig) -> str:
    """The effective configuration as JSON (unset optional keys are ``null``)."""
    return json.dumps(to_data(config), indent=2) + "\n"


def _comment(text: str, indent: str = "") -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width=96 - len(indent))]


def _value_line(name: str, value: Any) -> str:
    return tomli_w.dumps({name: to_data(value)}).rstrip("\n")


def _table_lines(obj: Any, header: str) -> list[str]:
    lines = [header]
    tables: list[tuple[dataclasses.Field[Any], Any]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            tables.append((f, value))
            continue
        lines.extend(_comment(f.metadata["doc"]))
        if value is None:
            lines.append("# " + _value_line(toml_key(f), f.metadata["example"]))
        else:
            lines.append(_value_line(toml_key(f), value))
    for f, items in tables:
        lines.append("")
        lines.extend(_comment(f.metadata["doc"]))
        for item in items:
            lines.extend(_table_lines(item, f"[[{header.strip('[]')}.{toml_key(f)}]]"))
    return lines


def example_toml(role: str) -> str:
    """A commented configuration file for ``role`` carrying every setting with its default."""
    config = ROLES[role]()
    lines = [
        f"# vxnet {role} configuration: every setting, with its default value.",
        f"# Written by `vxnet config example {role}`; check a file with `vxnet config check FILE`.",
        "# Keys that are commented out are optional and unset by default.",
    ]
    for f in dataclasses.fields(config):
        lines.append("")
        lines.extend(_table_lines(getattr(config, f.name), f"[{f.name}]"))
    return "\n".join(lines) + "\n"


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
        return "see below"
    return "`" + json.dumps(to_data(value)) + "`"


_CODE_WORDS = re.compile(r"[\w./-]*<\w+>[\w./-]*")  # m-<name> would read as an HTML tag


def _reference_rows(cls: Any, prefix: str, out: list[str]) -> None:
    nested: list[tuple[str, Any]] = []
    out.append(f"\n**`[{prefix}]`**\n")
    out.append("| key | default | meaning |")
    out.append("|---|---|---|")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        doc = _CODE_WORDS.sub(r"`\g<0>`", f.metadata["doc"])
        out.append(f"| `{toml_key(f)}` | {_default_text(f)} | {doc} |")
        args = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is tuple else ()
        if args and dataclasses.is_dataclass(args[0]):  # an array of tables
            nested.append((f"[{prefix}.{toml_key(f)}]", args[0]))
    for name, item_cls in nested:
        _reference_rows(item_cls, name, out)


def reference_markdown() -> str:
    """The configuration reference, as a Markdown section body."""
    out: list[str] = []
    for role, cls in ROLES.items():
        out.append(f"\n### {role} (`vxnet config example {role}`)")
        for f in dataclasses.fields(cls):
            _reference_rows(f.type if isinstance(f.type, type) else f.default_factory, f.name, out)
    default_overlays = [to_data(o) for o in MasterConfig().network.overlays]
    out.append(f"\nDefault `network.overlays`: `{json.dumps(_drop_none(default_overlays))}`.")
    return "\n".join(out).lstrip("\n") + "\n"
