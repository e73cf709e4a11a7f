"""A transmit-limited broadcast queue, as memberlist's ``TransmitLimitedQueue``.

Rules:

* Each broadcast is sent at most ``retransmit_mult * ceil(log10(n + 1))`` times, ``n`` being the
  number of members at the time of sending; then it is dropped.
* A broadcast with a ``key`` replaces (invalidates) a queued one with the same key: only the newest
  news about a member is worth spreading.
* :meth:`BroadcastQueue.take` fills the room left in a packet, least-sent first and, among those
  sent equally often, newest first; a broadcast that does not fit is left for a later packet.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

__all__ = ["BroadcastQueue", "retransmit_limit"]


def retransmit_limit(retransmit_mult: int, num_nodes: int) -> int:
    """How many times a broadcast is sent in a cluster of ``num_nodes``."""
    return retransmit_mult * math.ceil(math.log10(num_nodes + 1))


@dataclass(order=True, slots=True)
class _Item:
    transmits: int
    order: int  # negative sequence: newer items sort first
    message: bytes = field(compare=False)
    key: str | None = field(compare=False)
    live: bool = field(default=True, compare=False)


class BroadcastQueue:
    """Broadcasts waiting to be piggybacked on outgoing packets."""

    def __init__(self, retransmit_mult: int) -> None:
        self.retransmit_mult = retransmit_mult
        self._heap: list[_Item] = []
        self._by_key: dict[str, _Item] = {}
        self._seq = 0
        self._live = 0
        self.unsent_bytes = 0  # bytes of live broadcasts not sent even once yet

    def __len__(self) -> int:
        return self._live

    def put(self, message: bytes, key: str | None = None) -> None:
        """Queue ``message``; with a ``key``, it replaces any queued message with that key."""
        if key is not None:
            old = self._by_key.pop(key, None)
            if old is not None and old.live:
                self._drop(old)
        self._seq += 1
        item = _Item(0, -self._seq, message, key)
        heapq.heappush(self._heap, item)
        if key is not None:
            self._by_key[key] = item
        self._live += 1
        self.unsent_bytes += len(message)
        if len(self._heap) > 2 * self._live + 64:
            self._compact()

    def take(self, overhead: int, limit: int, num_nodes: int) -> list[bytes]:
        """Broadcasts that fit in ``limit`` bytes, each costing its length plus ``overhead``."""
        if limit <= overhead:
            return []
        max_transmits = retransmit_limit(self.retransmit_mult, num_nodes)
        taken: list[bytes] = []
        kept: list[_Item] = []
        room = limit
        while self._heap and room > overhead:
            item = heapq.heappop(self._heap)
            if not item.live:
                continue
            cost = len(item.message) + overhead
            if cost > room:
                kept.append(item)
                if len(kept) > 32:  # the rest is likely too large as well
                    break
                continue
            room -= cost
            taken.append(item.message)
            if item.transmits == 0:
                self.unsent_bytes -= len(item.message)
            item.transmits += 1
            if item.transmits >= max_transmits:
                self._drop(item)
            else:
                kept.append(item)
        for item in kept:
            heapq.heappush(self._heap, item)
        return taken

    def prune(self, keep: int) -> None:
        """Keep only the ``keep`` least-sent, newest broadcasts (a cap on the queue's size)."""
        if self._live <= keep:
            return
        live = sorted(i for i in self._heap if i.live)
        for item in live[keep:]:
            self._drop(item)
        self._compact()

    def clear(self) -> None:
        self._heap.clear()
        self._by_key.clear()
        self._live = 0
        self.unsent_bytes = 0

    def _drop(self, item: _Item) -> None:
        item.live = False
        self._live -= 1
        if item.transmits == 0:
            self.unsent_bytes -= len(item.message)
        if item.key is not None and self._by_key.get(item.key) is item:
            del self._by_key[item.key]

    def _compact(self) -> None:
        self._heap = [i for i in self._heap if i.live]
        heapq.heapify(self._heap)
