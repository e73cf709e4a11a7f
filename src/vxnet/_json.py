"""JSON from outside the process (HTTP bodies, CNI requests): parsed with a bounded nesting depth.

``json.loads`` recurses once per level, so a body of ``[[[[...`` raises ``RecursionError`` (not a
``ValueError``) deep in the parser, and a merely deep value can exhaust the stack of whatever
walks it next. :func:`loads_bounded` refuses both with a :class:`JsonError` (a ``ValueError``).
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["MAX_DEPTH", "JsonError", "loads_bounded"]

MAX_DEPTH: Final = 32  # our own documents nest 5 levels at most


class JsonError(ValueError):
    """Not JSON, or nested deeper than allowed; the message says which."""


def loads_bounded(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(text)``, refusing values that nest arrays and objects deeper than
    ``max_depth``; the check walks the value once, without recursion.

    Raises:
        JsonError: ``text`` is not JSON, or is nested too deeply.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonError(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JsonError(str(exc)) from None
    if isinstance(text, bytes):
        openers = text.count(b"[") + text.count(b"{")
    else:
        openers = text.count("[") + text.count("{")
    if openers <= max_depth:
        return value  # cannot nest deeper than it has brackets: no walk needed
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise JsonError(f"nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)
    return value
