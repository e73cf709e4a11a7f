"""What the replicated store holds: records, their versions, changes, and the input rules.

Keys are 1 to 255 printable ASCII characters without spaces, in non-empty ``/``-separated
segments, none of them ``..``; node names are 1 to 255 printable characters; values are msgpack
maps with string keys. A record is ``(key, value, version, owner)``; a value of ``None`` is a
tombstone. A version is ``(hlc, writer)``, ordered by hybrid logical clock, then writer name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgpack

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "NAME_MAX",
    "Change",
    "Record",
    "Version",
    "encode_value",
    "key_problem",
    "name_problem",
]

NAME_MAX: Final = 255
KEY_CHARS = re.compile(r"[\x21-\x7e]{1,255}")


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """When and by whom a record was written; versions order by ``hlc``, then ``writer``."""

    hlc: int  # (physical milliseconds << 16) | logical counter
    writer: str


@dataclass(frozen=True, slots=True)
class Record:
    """One key's record. ``value`` is ``None`` for a tombstone; ``owner`` is the writer."""

    key: str
    value: Mapping[str, Any] | None
    version: Version
    owner: str

    @property
    def is_tombstone(self) -> bool:
        """Whether the record is a delete."""
        return self.value is None


@dataclass(frozen=True, slots=True)
class Change:
    """The record for ``key`` changed from ``old`` to ``new`` (see :meth:`Store.changes`)."""

    key: str
    old: Record | None
    new: Record


def key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"a key must be a string, not {type(key).__name__}"
    if KEY_CHARS.fullmatch(key) is None:
        return f"key {key[:80]!r} is not 1 to 255 printable ASCII characters without spaces"
    segments = key.split("/")
    if "" in segments:
        return f"key {key!r} has an empty '/'-separated segment"
    if ".." in segments:
        return f"key {key!r} has a '..' segment"
    return None


def name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"a node name must be a string, not {type(name).__name__}"
    if not 1 <= len(name) <= NAME_MAX or not name.isprintable():
        return f"node name {name[:80]!r} is not 1 to 255 printable characters"
    return None


def encode_value(value: Mapping[str, Any], limit: int) -> tuple[bytes, dict[str, Any]]:
    """A local value's wire encoding and its decoded form (what every peer will see)."""
    try:
        as_dict = dict(value)
        blob = msgpack.packb(as_dict, use_bin_type=True)
        decoded = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise ValueError(f"value is not a msgpack-able map with string keys: {exc}") from exc
    if not isinstance(decoded, dict) or not all(isinstance(k, str) for k in decoded):
        raise ValueError("value must be a map with string keys")
    if len(blob) > limit:
        raise ValueError(f"value encodes to {len(blob)} bytes, over max_record_bytes={limit}")
    return blob, decoded
