"""The wall clock as a seam: what the gossip service reads wall time through.

The store's versions are hybrid logical clocks built on wall time, so the service needs one; the
cores and the store layer take the time as a parameter. A test or a simulation passes its own
:class:`WallClock` (a fixed or a skewed one); a process uses :class:`SystemWallClock`.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SystemWallClock", "WallClock"]


class WallClock(Protocol):
    """A source of wall time."""

    def wall(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemWallClock:
    """The system's wall clock (:func:`time.time`)."""

    def wall(self) -> float:
        return time.time()
