"""The one exception the memberlist codec raises."""

from __future__ import annotations

__all__ = ["WireError"]


class WireError(Exception):
    """Bytes from a peer could not be decoded; the message says what was wrong and where.

    This is always the remote side's fault (or the network's): a local programming error, such as
    encoding a field that is out of range, raises :class:`ValueError` instead.
    """
