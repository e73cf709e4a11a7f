"""The exceptions for bad input from peers: :class:`WireError` (memberlist and Serf codecs),
:class:`StoreError` (the replicated store)."""

from __future__ import annotations

__all__ = ["StoreError", "WireError"]


class WireError(Exception):
    """Bytes from a peer could not be decoded; the message says what was wrong and where.

    This is always the remote side's fault (or the network's): a local programming error, such as
    encoding a field that is out of range, raises :class:`ValueError` instead.
    """


class StoreError(Exception):
    """Bytes from a peer could not be accepted by the store; the message says what was wrong.

    This is always the remote side's fault (or the network's): local misuse, such as writing a
    key that breaks the key rules, raises :class:`ValueError` instead.
    """
