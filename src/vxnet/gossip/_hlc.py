"""The hybrid logical clock that stamps the store's versions (Kulkarni et al.).

A timestamp is a 64-bit int: 48 bits of wall-clock milliseconds, then a 16-bit logical counter.
The clock is fed the wall time (seconds since the epoch) with every call; it reads no clock.
"""

from __future__ import annotations

import math
from typing import Final

from vxnet.gossip._errors import StoreError

__all__ = ["HLC_MAX", "LOGICAL_BITS", "MAX_DRIFT", "PHYSICAL_MAX", "HybridClock", "wall_to_ms"]

MAX_DRIFT: Final = 60.0  # seconds a remote timestamp may be ahead of our wall time
LOGICAL_BITS: Final = 16
HLC_MAX: Final = (1 << 64) - 1
PHYSICAL_MAX: Final = (1 << 48) - 1


def wall_to_ms(wall: float) -> int:
    """``wall`` (seconds since the epoch) in whole milliseconds, checked to fit the HLC."""
    if not math.isfinite(wall) or wall < 0:
        raise ValueError(f"wall time must be finite seconds since the epoch, got {wall!r}")
    ms = round(wall * 1000)
    if ms > PHYSICAL_MAX:
        raise ValueError(f"wall time {wall!r} is beyond the 48-bit millisecond range of the HLC")
    return ms


class HybridClock:
    """A hybrid logical clock (Kulkarni et al.): 48-bit milliseconds, 16-bit logical counter.

    Timestamps from :meth:`now` strictly increase, stay close to the wall time, and exceed every
    timestamp :meth:`observe` has accepted. When the logical counter overflows it carries into
    the physical part (the clock runs a millisecond ahead).
    """

    def __init__(self, *, max_drift: float = MAX_DRIFT) -> None:
        if not (math.isfinite(max_drift) and max_drift >= 0):
            raise ValueError(f"max_drift must be a non-negative number of seconds: {max_drift!r}")
        self.max_drift = max_drift
        self._drift_ms = round(max_drift * 1000)
        self._last = 0

    @property
    def last(self) -> int:
        """The highest timestamp issued or observed."""
        return self._last

    def now(self, wall: float) -> int:
        """A timestamp for a local event at ``wall`` (seconds since the epoch)."""
        physical = wall_to_ms(wall)
        if physical > self._last >> LOGICAL_BITS:
            self._last = physical << LOGICAL_BITS
        elif self._last < HLC_MAX:
            self._last += 1
        else:
            raise ValueError("the hybrid clock is exhausted (observed the largest timestamp)")
        return self._last

    def check(self, hlc: int, wall: float) -> None:
        """Raise :class:`StoreError` unless ``hlc`` is acceptable from a peer at ``wall``.

        Raises:
            StoreError: ``hlc`` is out of range or more than ``max_drift`` ahead of ``wall``.
        """
        if not 0 <= hlc <= HLC_MAX:
            raise StoreError(f"timestamp {hlc!r} is out of the 64-bit range")
        ahead = (hlc >> LOGICAL_BITS) - wall_to_ms(wall)
        if ahead > self._drift_ms:
            raise StoreError(
                f"timestamp is {ahead / 1000:.3f} s ahead of our wall time (max drift "
                f"{self.max_drift} s): the writer's clock is broken"
            )

    def observe(self, hlc: int, wall: float) -> None:
        """Take a remote timestamp into account, so that later local ones exceed it.

        Raises:
            StoreError: ``hlc`` is out of range or more than ``max_drift`` ahead of ``wall``.
        """
        self.check(hlc, wall)
        self._last = max(self._last, hlc)
