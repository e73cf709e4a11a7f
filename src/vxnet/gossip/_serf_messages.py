"""Serf's messages, as frozen dataclasses (serf ``messages.go``).

Serf 0.9 carries its own messages inside memberlist user messages (type 8) and push-pull user
state. Their wire form is in :mod:`._serf_codec`, the member state they drive in
:mod:`._serf_state`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from vxnet.gossip._errors import WireError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "QUERY_FLAG_ACK",
    "QUERY_FLAG_NO_BROADCAST",
    "JoinIntent",
    "LeaveIntent",
    "PushPullEvent",
    "PushPullEvents",
    "SerfError",
    "SerfMessage",
    "SerfMessageType",
    "SerfPushPull",
    "SerfQuery",
    "SerfQueryResponse",
    "SerfUserEvent",
    "UnhandledSerfMessage",
]

QUERY_FLAG_ACK = 1  # the querier wants an ack from every member that sees the query
QUERY_FLAG_NO_BROADCAST = 2  # members must not rebroadcast the query


class SerfError(WireError):
    """A Serf message or tag blob from a peer could not be decoded (the peer's fault).

    A :class:`WireError`, so a driver can treat bad Serf and bad memberlist bytes alike; local
    mistakes (a number too big for its Go field, tags over the size limit) raise ValueError.
    """


class SerfMessageType(enum.IntEnum):
    """The first byte of a Serf message inside a memberlist user message."""

    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5
    CONFLICT_RESPONSE = 6
    KEY_REQUEST = 7
    KEY_RESPONSE = 8
    RELAY = 9


@dataclass(frozen=True, slots=True)
class LeaveIntent:
    """``messageLeave``: ``node`` intends to leave (or is forced out) at Lamport time ``ltime``."""

    ltime: int
    node: str
    prune: bool = False


@dataclass(frozen=True, slots=True)
class JoinIntent:
    """``messageJoin``: ties ``node``'s join to Lamport time ``ltime``."""

    ltime: int
    node: str


@dataclass(frozen=True, slots=True)
class PushPullEvent:
    """``userEvent``: one recent user event in a push-pull."""

    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class PushPullEvents:
    """``userEvents``: the recent user events seen at one event Lamport time."""

    ltime: int
    events: tuple[PushPullEvent, ...]


@dataclass(frozen=True, slots=True)
class SerfPushPull:
    """``messagePushPull``: Serf's state exchange, the memberlist push-pull user state.

    ``events`` keeps Go's nil slots as ``None`` (Serf sends its whole 512-slot event ring).
    """

    ltime: int
    status_ltimes: Mapping[str, int]
    left_members: tuple[str, ...]
    event_ltime: int
    events: tuple[PushPullEvents | None, ...]
    query_ltime: int


@dataclass(frozen=True, slots=True)
class SerfUserEvent:
    """``messageUserEvent``: a user event; ``cc`` is "can coalesce"."""

    ltime: int
    name: str
    payload: bytes
    cc: bool


@dataclass(frozen=True, slots=True)
class SerfQuery:
    """``messageQuery``: a query; responses go to ``addr``:``port`` (``source_node``)."""

    ltime: int
    id: int
    addr: bytes
    port: int
    source_node: str
    filters: tuple[bytes, ...]
    flags: int
    relay_factor: int
    timeout_ns: int
    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SerfQueryResponse:
    """``messageQueryResponse``: an ack (``flags & QUERY_FLAG_ACK``) or a response to a query."""

    ltime: int
    id: int
    from_node: str
    flags: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class UnhandledSerfMessage:
    """A Serf message vxnet only tolerates (conflict/key responses, key requests, relays)."""

    type: SerfMessageType
    body: bytes  # everything after the type byte, undecoded


SerfMessage: TypeAlias = (
    LeaveIntent
    | JoinIntent
    | SerfPushPull
    | SerfUserEvent
    | SerfQuery
    | SerfQueryResponse
    | UnhandledSerfMessage
)
