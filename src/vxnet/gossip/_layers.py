"""What rides on the membership core: the Serf layer and the replicated store, as one delegate.

Rules:

* User messages whose first byte is ``STORE_MAGIC`` are store deltas; every other user message is
  Serf's. Store deltas are only ever sent to peers whose tags carry ``vxnet`` (Serf would log an
  error about a message type it does not know), from a queue of their own.
* Push-pull user state is Serf's alone; the store repairs itself by its own anti-entropy exchange
  (two request/response rounds on the gossip TCP port, see :mod:`._store_messages`).
* The store keeps wall time (its versions must compare across nodes); the membership core keeps
  monotonic time. :class:`StoreLayer` reads no clock: every call that needs the time takes the
  wall time as a parameter. :class:`NodeLayers`, the core's delegate, is given both clocks
  (callables, so a simulation passes its own) and converts deadlines between the two.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING, Any

from vxnet.gossip._errors import StoreError, WireError
from vxnet.gossip._queue import BroadcastQueue
from vxnet.gossip._serf_codec import decode_tags
from vxnet.gossip._serf_state import SerfState
from vxnet.gossip._store_codec import delta_key
from vxnet.gossip._store_messages import STORE_MAGIC

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from vxnet.gossip._keyring import Keyring
    from vxnet.gossip._serf_queries import QueryReply
    from vxnet.gossip._store import Store

__all__ = ["NodeLayers", "SerfLayer", "StoreLayer", "is_vxnet_meta"]

log = logging.getLogger("vxnet.gossip")

RETRACT_CHECK_INTERVAL = 5.0
FAST_SYNC_INTERVAL = 0.25  # anti-entropy pace while news outruns what packets can carry
BACKLOG_BYTES = 2 * 1400  # unsent deltas beyond two packets' worth: gossip alone is too slow
BURST_RECORDS = 8.0  # this many records merged lately (decaying): a bulk change is under way
BURST_HALF_LIFE = 1.0  # seconds
MAX_QUEUED_DELTAS = 512  # anti-entropy carries what the queue drops
MAX_SYNC_TARGETS = 3  # after a heal, a few exchanges with the other side are enough


@functools.lru_cache(maxsize=4096)
def is_vxnet_meta(meta: bytes | None) -> bool:
    """Whether node meta carries the ``vxnet`` tag (a vxnet peer, not a plain Serf agent)."""
    if not meta:
        return False
    try:
        return "vxnet" in decode_tags(meta)
    except WireError:
        return False


class SerfLayer:
    """Serf's intents, clocks and push-pull state, with a broadcast queue."""

    def __init__(self, name: str, retransmit_mult: int, keyring: Keyring | None = None) -> None:
        self.state = SerfState(name, keyring=keyring)
        self.queue = BroadcastQueue(retransmit_mult)
        self.errors = 0

    def receive(self, payload: bytes, now: float) -> None:
        self._rebroadcast("Serf message", lambda: self.state.receive(payload, now))

    def merge_remote_state(self, data: bytes, now: float) -> None:
        self._rebroadcast("Serf push-pull state", lambda: self.state.merge_remote_state(data, now))

    def _rebroadcast(self, what: str, handle: Callable[[], list[bytes]]) -> None:
        """Run ``handle`` on a peer's bytes and queue what it says to pass on; count bad input."""
        try:
            out = handle()
        except WireError as exc:
            self.errors += 1
            log.debug("bad %s: %s", what, exc)
            return
        for message in out:
            self.queue.put(message)


class StoreLayer:
    """The replicated store on gossip: local writes, deltas in and out, maintenance.

    The owner is the source of truth for its records. A node that starts with an empty store
    (a restart) re-publishes what it still owns; records it owned before the restart and has not
    re-published within ``republish_grace`` seconds are retracted (deleted), so that a record of
    something that died with the old process does not live on in the cluster.

    Every method that needs the time takes ``wall``, the current wall time in seconds since the
    epoch; the layer reads no clock.

    Args:
        store: The store core.
        retransmit_mult: Scales how often a delta is re-sent (memberlist's ``RetransmitMult``).
        started: Wall time this process started: own records older than that are stale.
        republish_grace: Seconds the owner has to re-publish before stale records are retracted.
    """

    def __init__(
        self,
        store: Store,
        retransmit_mult: int,
        started: float,
        *,
        republish_grace: float = 30.0,
    ) -> None:
        self.store = store
        self.queue = BroadcastQueue(retransmit_mult)
        self.errors = 0
        self.started = started
        self.republish_grace = republish_grace
        self._next_retract = self.started + republish_grace
        self._sync_targets: list[str] = []
        self._burst = 0.0
        self._burst_at = self.started

    # --- when to run anti-entropy, and with whom ------------------------------------------------

    def backlogged(self, wall: float) -> bool:
        """Whether news outruns gossip: unsent deltas beyond what packets carry soon, or a burst
        of records merged lately (a bulk change spreading: anti-entropy finishes it faster)."""
        return self.queue.unsent_bytes > BACKLOG_BYTES or self._recent(wall) > BURST_RECORDS

    def _recent(self, wall: float) -> float:
        self._burst *= 0.5 ** (max(wall - self._burst_at, 0.0) / BURST_HALF_LIFE)
        self._burst_at = wall
        return self._burst

    def _note_merged(self, count: int, wall: float) -> None:
        self._burst = self._recent(wall) + count

    def sync_request(self) -> bytes:
        """Round 1 of an anti-entropy exchange we start."""
        return self.store.sync_request()

    def sync_step(self, reply: bytes, wall: float) -> bytes | None:
        """Feed a reply of our exchange; the next request, or ``None`` when done.

        Raises:
            StoreError: The peer's reply is malformed.
        """
        before = self.store.stats.records_merged
        follow_up = self.store.sync_step(reply, wall)
        self._note_merged(self.store.stats.records_merged - before, wall)
        return follow_up

    def handle_sync(self, frame: bytes, wall: float) -> bytes:
        """Answer a peer's anti-entropy request.

        Raises:
            StoreError: The request is malformed.
        """
        before = self.store.stats.records_merged
        reply = self.store.handle_sync(frame, wall)
        self._note_merged(self.store.stats.records_merged - before, wall)
        return reply

    def member_joined(self, name: str) -> None:
        """A member (re)appeared: exchange state with it first (a healed partition, a restart)."""
        if (
            name != self.store.node
            and name not in self._sync_targets
            and len(self._sync_targets) < MAX_SYNC_TARGETS
        ):
            self._sync_targets.append(name)

    def take_sync_target(self) -> str | None:
        """The member to sync with next, if one asked for it; else pick at random."""
        return self._sync_targets.pop(0) if self._sync_targets else None

    def sync_delay(self, normal: float, jitter: float, wall: float) -> float:
        """Seconds until the next anti-entropy exchange (``jitter`` around 1)."""
        urgent = self._sync_targets or self.backlogged(wall)
        return (FAST_SYNC_INTERVAL if urgent else normal) * jitter

    def _queue_delta(self, delta: bytes, key: str | None = None) -> None:
        self.queue.put(delta, key=key)
        self.queue.prune(MAX_QUEUED_DELTAS)

    def put(self, key: str, value: Mapping[str, Any], wall: float) -> None:
        """Write a record owned by this node and spread it.

        Raises:
            ValueError: A bad key or value (the message says which rule it breaks).
        """
        self._queue_delta(self.store.put(key, value, wall), key)

    def delete(self, key: str, wall: float) -> bool:
        """Delete a record and spread the tombstone; False if there was nothing to delete."""
        delta = self.store.delete(key, wall)
        if delta is None:
            return False
        self._queue_delta(delta, key)
        return True

    def receive(self, payload: bytes, wall: float) -> None:
        try:
            out = self.store.receive(payload, wall)
        except StoreError as exc:
            self.errors += 1
            log.debug("bad store delta: %s", exc)
            return
        self._note_merged(len(out), wall)
        for delta in out:
            self._queue_delta(delta, delta_key(delta))

    def tick(self, wall: float) -> None:
        for delta in self.store.tick(wall):
            self._queue_delta(delta, delta_key(delta))
        if wall >= self._next_retract:
            self._next_retract = wall + RETRACT_CHECK_INTERVAL
            self.retract_stale_own_records(wall)

    def retract_stale_own_records(self, wall: float) -> list[str]:
        """Delete our records written before this process started and not re-published."""
        started_ms = int(self.started * 1000)
        stale = [
            r.key
            for r in self.store.items()
            if r.owner == self.store.node and (r.version.hlc >> 16) < started_ms
        ]
        for key in stale:
            self.delete(key, wall)
        return stale

    def next_deadline(self) -> float:
        """Wall time of the next maintenance."""
        return min(self.store.next_deadline(), self._next_retract)


class NodeLayers:
    """The membership core's delegate: routes user messages, fills packets, runs timers.

    Args:
        serf: The Serf layer, or ``None`` (simulations).
        store: The store layer, or ``None``.
        num_members: How many members there are (for retransmit limits).
        monotonic: The membership core's clock, to turn the store's wall deadlines into its own.
        wall: The wall clock (seconds since the epoch) the store layer is fed with.
    """

    def __init__(
        self,
        serf: SerfLayer | None,
        store: StoreLayer | None,
        num_members: Callable[[], int],
        monotonic: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self.serf = serf
        self.store = store
        self._num_members = num_members
        self._monotonic = monotonic
        self._wall = wall

    def broadcasts(self, overhead: int, limit: int, peer_meta: bytes | None) -> list[bytes]:
        n = self._num_members()
        out = self.serf.queue.take(overhead, limit, n) if self.serf is not None else []
        if self.store is not None and is_vxnet_meta(peer_meta):
            used = sum(len(m) + overhead for m in out)
            out += self.store.queue.take(overhead, limit - used, n)
        return out

    def notify_user(self, payload: bytes, now: float) -> None:
        if payload[:1] == bytes([STORE_MAGIC]):
            if self.store is not None:
                self.store.receive(payload, self._wall())
        elif self.serf is not None:
            self.serf.receive(payload, now)

    def replies(self) -> list[QueryReply]:
        return self.serf.state.queries.take_replies() if self.serf is not None else []

    def local_state(self, join: bool) -> bytes:
        return self.serf.state.local_state(join) if self.serf is not None else b""

    def merge_remote_state(self, data: bytes, join: bool, now: float) -> None:
        if self.serf is not None:
            self.serf.merge_remote_state(data, now)

    def next_deadline(self) -> float:
        deadline = math.inf
        if self.serf is not None:
            serf_deadline = self.serf.state.next_deadline()
            if serf_deadline is not None:
                deadline = serf_deadline
        if self.store is not None:
            store_deadline = self.store.next_deadline()
            if store_deadline != math.inf:
                deadline = min(deadline, self._monotonic() + store_deadline - self._wall())
        return deadline

    def tick(self, now: float) -> None:
        if self.serf is not None:
            self.serf.state.tick(now)
        if self.store is not None:
            self.store.tick(self._wall())
