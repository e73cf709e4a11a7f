"""Reading JSON values into record fields: one place for the type checks and their messages.

Every reader takes the object, the key and ``where`` (the path of the object, for the message) and
raises :class:`RecordError` naming the field when the value has the wrong type. Absent keys and
JSON ``null`` read as ``None`` for optional fields; unknown keys are never looked at, so a record
written by a newer version reads the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["RecordError"]

T = TypeVar("T")


class RecordError(ValueError):
    """A record that does not fit its type (the remote writer's fault); the text says where."""


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def as_object(value: object, where: str) -> Mapping[str, Any]:
    """``value`` as a JSON object.

    Raises:
        RecordError: It is not one.
    """
    if not isinstance(value, Mapping):
        name = "null" if value is None else type(value).__name__
        raise RecordError(f"{where or 'the record'}: expected an object, got {name}")
    return value


def _typed(obj: Mapping[str, Any], key: str, where: str, kind: type[T], expected: str) -> T | None:
    """``obj[key]`` as a ``kind``, ``None`` when absent or null.

    Raises:
        RecordError: The value is present and not a ``kind`` (``expected`` names one for the
            message). JSON ``true`` is no integer, though ``bool`` is a subclass of ``int``.
    """
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecordError(f"{_at(where, key)}: expected {expected}, got {value!r}")
    return value


def _present(value: T | None, key: str, where: str) -> T:
    """``value``, which a required field must have.

    Raises:
        RecordError: It is ``None`` (the key is absent or null).
    """
    if value is None:
        raise RecordError(f"{_at(where, key)}: missing")
    return value


def opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    return _typed(obj, key, where, str, "a string")


def req_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    return _present(opt_str(obj, key, where), key, where)


def opt_int(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    return _typed(obj, key, where, int, "an integer")


def req_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    return _present(opt_int(obj, key, where), key, where)


def opt_bool(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    return _typed(obj, key, where, bool, "true or false")


def opt_list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"{_at(where, key)}: expected a list, got {value!r}")
    return value


def opt_object(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    return None if value is None else as_object(value, _at(where, key))


def without_none(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """``pairs`` less the ``None`` values: absent optional fields are left out of the JSON."""
    return {k: v for k, v in pairs.items() if v is not None}
