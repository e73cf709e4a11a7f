"""What the membership core hands out and takes in: member snapshots and events, stream requests
for the driver, the delegate the layer above supplies, and the core's counters.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vxnet.gossip._messages import NodeStatus
    from vxnet.gossip._serf_queries import QueryReply

__all__ = ["Address", "Delegate", "Member", "MemberEvent", "NoDelegate", "Stats", "StreamRequest"]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Member:
    """A snapshot of one member as this node sees it."""

    name: str
    addr: str
    port: int
    meta: bytes
    status: NodeStatus
    incarnation: int
    protocol_max: int
    since: float  # when the status last changed (core time)


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A member joined (``join``), died or left (``leave``), or changed its meta (``update``)."""

    kind: str
    member: Member


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A TCP exchange for the driver: connect to ``addr``, write ``payload``, read one reply.

    The driver reports the outcome with :meth:`Membership.stream_reply` (``None`` when the
    connection failed or ``deadline`` passed).
    """

    id: int
    addr: Address
    payload: bytes
    deadline: float


class Delegate(Protocol):
    """What the layer above supplies. Called on the receive path: must not block."""

    def broadcasts(self, overhead: int, limit: int, peer_meta: bytes | None) -> list[bytes]:
        """User messages to piggyback (each costs its length + ``overhead``; ``limit`` total).

        ``peer_meta`` is the receiver's node meta (``None`` if unknown), so that messages only
        vxnet understands go only to vxnet peers.
        """
        ...

    def notify_user(self, payload: bytes, now: float) -> None:
        """A user message arrived."""
        ...

    def replies(self) -> list[QueryReply]:
        """Messages for a querier, to send as user messages straight to it (after each
        :meth:`notify_user`)."""
        ...

    def local_state(self, join: bool) -> bytes:
        """User state to send in a push-pull."""
        ...

    def merge_remote_state(self, data: bytes, join: bool, now: float) -> None:
        """User state received in a push-pull."""
        ...

    def next_deadline(self) -> float:
        """When the delegate's own timers need :meth:`tick` (``math.inf`` if never)."""
        ...

    def tick(self, now: float) -> None:
        """Run the delegate's due timers."""
        ...


class NoDelegate:
    """A delegate with nothing above it: no user messages, no user state, no timers."""

    def broadcasts(self, overhead: int, limit: int, peer_meta: bytes | None) -> list[bytes]:
        return []

    def notify_user(self, payload: bytes, now: float) -> None:
        return None

    def replies(self) -> list[QueryReply]:
        return []

    def local_state(self, join: bool) -> bytes:
        return b""

    def merge_remote_state(self, data: bytes, join: bool, now: float) -> None:
        return None

    def next_deadline(self) -> float:
        return math.inf

    def tick(self, now: float) -> None:
        return None


PROBE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass(slots=True)
class Stats:
    """Counters for metrics and tests."""

    packets_received: int = 0
    packets_sent: int = 0
    bytes_sent: int = 0
    bad_packets: int = 0
    unexpected_pings: int = 0
    refutations: int = 0
    suspicions: int = 0
    deaths_declared: int = 0
    push_pulls: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    # probe round trips (ping to ack, direct or through others), by PROBE_BUCKETS upper bound
    probe_rtt: list[int] = field(default_factory=lambda: [0] * (len(PROBE_BUCKETS) + 1))
    probe_rtt_sum: float = 0.0

    def probed(self, seconds: float) -> None:
        """Count a probe answered ``seconds`` after it was sent."""
        self.probe_rtt[bisect.bisect_left(PROBE_BUCKETS, seconds)] += 1
        self.probe_rtt_sum += seconds
