"""Serf's Lamport clocks (serf ``lamport.go``).

Clock rules (Lamport): ``witness(v)`` moves the clock to ``v + 1`` when ``v`` is not older than it;
a new message carries the current time, then the clock moves on. All three clocks start at 1.
"""

from __future__ import annotations

__all__ = ["LamportClock"]


class LamportClock:
    """A Lamport clock, as Serf's ``LamportClock``."""

    __slots__ = ("_counter",)

    def __init__(self, start: int = 0) -> None:
        self._counter = start

    def __repr__(self) -> str:
        return f"LamportClock({self._counter})"

    def time(self) -> int:
        """Return the current time."""
        return self._counter

    def increment(self) -> int:
        """Move the clock on by one and return the new time."""
        self._counter += 1
        return self._counter

    def witness(self, v: int) -> None:
        """Account for time ``v`` seen from another process: the clock ends up past it."""
        if v >= self._counter:
            self._counter = v + 1
