"""The memberlist messages, as plain frozen dataclasses (the codec is in :mod:`._wire`).

Field names and meanings follow HashiCorp memberlist 0.2 (``net.go``), the version Serf 0.9.4
embeds, so that the codec can map each class to the msgpack map Go writes, field for field.
Addresses are kept as bytes (4 for IPv4, 16 for IPv6), as on the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "PROTOCOL_SPOKEN",
    "Ack",
    "Alive",
    "Dead",
    "ErrorResponse",
    "IndirectPing",
    "Message",
    "MessageType",
    "Nack",
    "NodeStatus",
    "Ping",
    "PushNodeState",
    "PushPull",
    "Suspect",
    "User",
]

PROTOCOL_MIN = 1
PROTOCOL_MAX = 5
PROTOCOL_SPOKEN = 2  # memberlist's ProtocolVersion2Compatible, what Serf speaks by default


class MessageType(enum.IntEnum):
    """The first byte of every memberlist packet or stream."""

    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERROR = 13


class NodeStatus(enum.IntEnum):
    """A member's state as push-pull carries it (memberlist ``NodeStateType``)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class Ping:
    """A direct probe; ``node`` names the intended target so a wrong recipient can tell."""

    seq_no: int
    node: str
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Ask a member to probe ``target`` on our behalf (and to send a nack if it gets no ack)."""

    seq_no: int
    target: bytes
    port: int
    node: str
    nack: bool = False
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    seq_no: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Nack:
    seq_no: int


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    error: str


@dataclass(frozen=True, slots=True)
class Suspect:
    incarnation: int
    node: str
    from_node: str  # Go field "From"


@dataclass(frozen=True, slots=True)
class Alive:
    """A member is alive at ``incarnation``; also how a node announces itself when it joins."""

    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes
    vsn: bytes  # pmin, pmax, pcur, dmin, dmax, dcur


@dataclass(frozen=True, slots=True)
class Dead:
    """A member is dead; ``from_node == node`` means it left gracefully."""

    incarnation: int
    node: str
    from_node: str


@dataclass(frozen=True, slots=True)
class User:
    """An opaque message for the layer above (Serf, the replicated store)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PushNodeState:
    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: NodeStatus
    vsn: bytes


@dataclass(frozen=True, slots=True)
class PushPull:
    """The whole state one side of a push-pull exchange sends over TCP."""

    nodes: tuple[PushNodeState, ...]
    user_state: bytes
    join: bool


Message = Ping | IndirectPing | Ack | Nack | ErrorResponse | Suspect | Alive | Dead | User
