"""Serf's member state: what a node keeps so that a real ``serf agent`` lists it as a member.

It is sans-IO: time is a parameter, nothing is sent; what the methods return is to be broadcast.
Messages are in :mod:`._serf_messages`, their codec in :mod:`._serf_codec`, the clocks in
:mod:`._lamport`.

Intent rules, per member; ``t`` is the intent's time, ``s`` the member's status time. Every intent
first witnesses the member clock; an accepted intent sets ``s = t`` and is rebroadcast:

    ============  =====================  ==============  =====================================
    intent        member is              when            then
    ============  =====================  ==============  =====================================
    join / leave  not known              t > buffered t  buffer the intent (newest kept)
    join / leave  known                  t <= s          ignore
    join          leaving                t > s           accept, alive again
    join          alive, left, failed    t > s           accept, status unchanged
    leave         us, while not leaving  t > s           ignore; refute with a new join intent
    leave         alive                  t > s           accept, leaving
    leave         failed                 t > s           accept, left
    leave         leaving, left          t > s           accept, status unchanged
    ============  =====================  ==============  =====================================

Memberlist events: a node joining becomes alive (a buffered join sets ``s``; a buffered leave sets
``s`` and makes it leaving); a node leaving becomes left if it was leaving, else failed. A pruning
leave that is accepted erases the member. Buffered intents expire after ``recent_intent_timeout``,
left members after ``tombstone_timeout``, failed ones after ``reconnect_timeout``.

Push-pull merge: witness each clock at its value minus one; each ``LeftMembers`` name is a leave
intent at its ``StatusLTimes`` time plus one; every other ``StatusLTimes`` entry is a join intent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vxnet.gossip._lamport import LamportClock
from vxnet.gossip._serf_codec import decode_serf, encode_serf
from vxnet.gossip._serf_messages import (
    JoinIntent,
    LeaveIntent,
    SerfError,
    SerfMessageType,
    SerfPushPull,
    SerfQuery,
    SerfQueryResponse,
    SerfUserEvent,
)
from vxnet.gossip._serf_queries import QueryResponder

if TYPE_CHECKING:
    from vxnet.gossip._keyring import Keyring

__all__ = ["MemberStatus", "SerfState"]


class MemberStatus(enum.StrEnum):
    """A member's status as Serf sees it."""

    ALIVE = "alive"
    LEAVING = "leaving"
    LEFT = "left"
    FAILED = "failed"


@dataclass(slots=True)
class _Member:
    status: MemberStatus
    status_ltime: int = 0
    since: float = 0.0  # when it became left or failed


@dataclass(slots=True)
class _Intent:
    type: SerfMessageType  # JOIN or LEAVE
    ltime: int
    seen: float


class SerfState:
    """What a node needs to look like a Serf member: clocks, status times, intents.

    Feed it memberlist's events (:meth:`notify_join`, :meth:`notify_leave`), user messages
    (:meth:`receive`) and push-pull user states (:meth:`merge_remote_state`); broadcast what
    they return. The local node is a member from the start, as memberlist reports itself.
    The member, event and query clocks are the public ``clock``, ``event_clock`` and
    ``query_clock``.

    Args:
        node: This node's name.
        recent_intent_timeout: Seconds to keep an intent for a node memberlist has not reported
            (Serf ``RecentIntentTimeout``).
        tombstone_timeout: Seconds to remember a member that left (Serf ``TombstoneTimeout``).
        reconnect_timeout: Seconds to remember a member that failed (Serf ``ReconnectTimeout``).
        keyring: The keyring Serf's key queries change (see :mod:`._serf_queries`), or ``None``.
    """

    __slots__ = (
        "_intents",
        "_leaving",
        "_members",
        "clock",
        "event_clock",
        "node",
        "queries",
        "query_clock",
        "recent_intent_timeout",
        "reconnect_timeout",
        "tombstone_timeout",
    )

    def __init__(
        self,
        node: str,
        *,
        recent_intent_timeout: float = 300.0,
        tombstone_timeout: float = 86400.0,
        reconnect_timeout: float = 86400.0,
        keyring: Keyring | None = None,
    ) -> None:
        self.node = node
        self.recent_intent_timeout = recent_intent_timeout
        self.tombstone_timeout = tombstone_timeout
        self.reconnect_timeout = reconnect_timeout
        # Serf moves every clock to 1 when it starts, so its first messages carry time 1.
        self.clock = LamportClock(1)
        self.event_clock = LamportClock(1)
        self.query_clock = LamportClock(1)
        self.queries = QueryResponder(node, self.query_clock, keyring)
        self._leaving = False  # we have sent our own leave intent
        self._members: dict[str, _Member] = {node: _Member(MemberStatus.ALIVE)}
        self._intents: dict[str, _Intent] = {}

    def __repr__(self) -> str:
        return f"SerfState({self.node!r}, clock={self.clock.time()}, members={len(self._members)})"

    # -- queries about the state

    def member_status(self, node: str) -> MemberStatus | None:
        """Return ``node``'s Serf-level status, or None if it is not a member."""
        member = self._members.get(node)
        return None if member is None else member.status

    def status_ltime(self, node: str) -> int | None:
        """Return the Lamport time of ``node``'s last accepted intent, or None if not a member."""
        member = self._members.get(node)
        return None if member is None else member.status_ltime

    def members(self) -> dict[str, MemberStatus]:
        """Return every member Serf would list, with its status."""
        return {name: m.status for name, m in self._members.items()}

    def next_deadline(self) -> float | None:
        """Return when :meth:`tick` next has something to expire, or None."""
        deadlines = [i.seen + self.recent_intent_timeout for i in self._intents.values()]
        for m in self._members.values():
            if m.status is MemberStatus.LEFT:
                deadlines.append(m.since + self.tombstone_timeout)
            elif m.status is MemberStatus.FAILED:
                deadlines.append(m.since + self.reconnect_timeout)
        return min(deadlines, default=None)

    # -- our own intents

    def join_intent(self, node: str, now: float) -> bytes:
        """Apply a join intent for ``node`` at the current time and return it to broadcast.

        For this node it also cancels a leave in progress: we mean to be alive.
        """
        msg = JoinIntent(self.clock.time(), node)
        self.clock.witness(msg.ltime)
        if node == self.node:
            self._leaving = False
        self._apply_join(msg, now)
        return encode_serf(msg)

    def leave_intent(self, node: str, now: float, *, prune: bool = False) -> bytes:
        """Apply a leave intent for ``node`` (ourselves, or a forced leave) and return it.

        After a leave intent for this node, leave intents for it are no longer refuted.
        """
        msg = LeaveIntent(self.clock.time(), node, prune)
        self.clock.increment()
        if node == self.node:
            self._leaving = True
        self._apply_leave(msg, now)
        return encode_serf(msg)

    # -- from the network

    def receive(self, payload: bytes, now: float) -> list[bytes]:
        """Handle the body of a memberlist user message.

        Returns:
            Serf messages to broadcast: the payload itself if Serf would rebroadcast it, or a
            join intent refuting a leave intent about this node.

        Raises:
            SerfError: The payload is not a well-formed Serf message.
        """
        if not payload:
            return []
        msg = decode_serf(payload)
        match msg:
            case LeaveIntent():
                refuted = self._refutes(msg)
                if self._apply_leave(msg, now):
                    return [bytes(payload)]
                return [self.join_intent(self.node, now)] if refuted else []
            case JoinIntent():
                return [bytes(payload)] if self._apply_join(msg, now) else []
            case SerfUserEvent():
                self.event_clock.witness(msg.ltime)
            case SerfQuery():
                self.query_clock.witness(msg.ltime)
                return [bytes(payload)] if self.queries.handle(msg) else []
            case SerfQueryResponse():
                self.queries.collect(msg)
            case _:
                pass  # responses and relays are for others; push-pull is not a user message
        return []

    def local_state(self, join: bool) -> bytes:
        """Return the push-pull user state to send (``join`` is accepted and ignored, as Serf)."""
        del join
        state = SerfPushPull(
            ltime=self.clock.time(),
            status_ltimes={name: m.status_ltime for name, m in self._members.items()},
            left_members=tuple(
                name for name, m in self._members.items() if m.status is MemberStatus.LEFT
            ),
            event_ltime=self.event_clock.time(),
            events=(),
            query_ltime=self.query_clock.time(),
        )
        return encode_serf(state)

    def merge_remote_state(self, data: bytes, now: float) -> list[bytes]:
        """Merge a peer's push-pull user state.

        Returns:
            A join intent to broadcast if the state says this node left while it is alive.

        Raises:
            SerfError: The state is empty, not a push-pull, or malformed.
        """
        if not data or data[0] != SerfMessageType.PUSH_PULL:
            raise SerfError(f"serf push-pull state has bad type prefix {data[:1].hex() or 'none'}")
        state = decode_serf(data)
        assert isinstance(state, SerfPushPull)
        # Nothing has been sent yet at the peer's current times, hence minus one.
        if state.ltime > 0:
            self.clock.witness(state.ltime - 1)
        if state.event_ltime > 0:
            self.event_clock.witness(state.event_ltime - 1)
        if state.query_ltime > 0:
            self.query_clock.witness(state.query_ltime - 1)
        refute = False
        left = set(state.left_members)
        for name in state.left_members:
            leave = LeaveIntent(state.status_ltimes.get(name, 0) + 1, name)
            refute |= self._refutes(leave)
            self._apply_leave(leave, now)
        for name, ltime in state.status_ltimes.items():
            if name not in left:
                self._apply_join(JoinIntent(ltime, name), now)
        for slot in state.events:
            if slot is not None and slot.events:
                self.event_clock.witness(slot.ltime)
        return [self.join_intent(self.node, now)] if refute else []

    # -- from memberlist

    def notify_join(self, node: str) -> None:
        """Memberlist reports ``node`` alive (NotifyJoin)."""
        member = self._members.get(node)
        if member is not None:
            member.status = MemberStatus.ALIVE
            member.since = 0.0
            return
        member = _Member(MemberStatus.ALIVE)
        intent = self._intents.get(node)
        if intent is not None:
            member.status_ltime = intent.ltime
            if intent.type is SerfMessageType.LEAVE:
                member.status = MemberStatus.LEAVING
        self._members[node] = member

    def notify_leave(self, node: str, now: float) -> None:
        """Memberlist reports ``node`` dead or gone (NotifyLeave)."""
        member = self._members.get(node)
        if member is None:
            return
        if member.status is MemberStatus.LEAVING:
            member.status = MemberStatus.LEFT
        elif member.status is MemberStatus.ALIVE:
            member.status = MemberStatus.FAILED
        else:
            return
        member.since = now

    def tick(self, now: float) -> None:
        """Expire old buffered intents, left members and failed members."""
        for name, intent in list(self._intents.items()):
            if now - intent.seen > self.recent_intent_timeout:
                del self._intents[name]
        for name, m in list(self._members.items()):
            if (m.status is MemberStatus.LEFT and now - m.since > self.tombstone_timeout) or (
                m.status is MemberStatus.FAILED and now - m.since > self.reconnect_timeout
            ):
                del self._members[name]

    # -- the intent rules (see the table at the top)

    def _refutes(self, msg: LeaveIntent) -> bool:
        member = self._members.get(msg.node)
        return (
            msg.node == self.node
            and not self._leaving
            and member is not None
            and msg.ltime > member.status_ltime
        )

    def _buffer(self, node: str, kind: SerfMessageType, ltime: int, now: float) -> bool:
        intent = self._intents.get(node)
        if intent is not None and ltime <= intent.ltime:
            return False
        self._intents[node] = _Intent(kind, ltime, now)
        return True

    def _apply_join(self, msg: JoinIntent, now: float) -> bool:
        self.clock.witness(msg.ltime)
        member = self._members.get(msg.node)
        if member is None:
            return self._buffer(msg.node, SerfMessageType.JOIN, msg.ltime, now)
        if msg.ltime <= member.status_ltime:
            return False
        member.status_ltime = msg.ltime
        if member.status is MemberStatus.LEAVING:
            member.status = MemberStatus.ALIVE
        return True

    def _apply_leave(self, msg: LeaveIntent, now: float) -> bool:
        self.clock.witness(msg.ltime)
        member = self._members.get(msg.node)
        if member is None:
            return self._buffer(msg.node, SerfMessageType.LEAVE, msg.ltime, now)
        if msg.ltime <= member.status_ltime or self._refutes(msg):
            return False
        member.status_ltime = msg.ltime
        if member.status is MemberStatus.ALIVE:
            member.status = MemberStatus.LEAVING
        elif member.status is MemberStatus.FAILED:
            member.status = MemberStatus.LEFT  # keeps its failure time for the tombstone
        if msg.prune:
            del self._members[msg.node]
        return True
