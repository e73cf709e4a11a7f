"""Time for deterministic simulations: timed actions run in order under trio's clock.

Both simulators (:mod:`.gossipsim`, :mod:`.logsim`) keep their events here.
Under ``trio.testing.MockClock`` the queue jumps the clock straight to the next event instead of
sleeping, so a large cluster costs no trio checkpoint per event; with a real clock it sleeps.
Actions that share a time run in the order they were pushed.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio.testing import MockClock

__all__ = ["EventQueue"]


class EventQueue:
    """A heap of ``(time, action)``; ``action(time)`` is called when its time comes."""

    def __init__(self, clock: MockClock | None = None) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = 0

    def push(self, when: float, action: Callable[[float], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, action))

    @property
    def next_time(self) -> float:
        """When the earliest action is due (``math.inf`` if none is queued)."""
        return self._heap[0][0] if self._heap else math.inf

    def run_next(self) -> None:
        """Run the earliest action (the caller has advanced the clock to it)."""
        when, _, action = heapq.heappop(self._heap)
        action(when)

    async def advance_to(self, when: float) -> None:
        """Move trio's time forward to ``when`` (no-op if it has passed)."""
        now = trio.current_time()
        if when <= now:
            return
        if self.clock is not None:
            self.clock.jump(when - now)
        else:
            await trio.sleep_until(when)
