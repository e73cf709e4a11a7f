"""The timer maths of membership: Lifeguard's health awareness and dynamic suspicion, and
memberlist's scaling of timeouts with the cluster's size.

* Local health awareness: a score from 0 to ``maximum - 1``; timeouts are multiplied by score + 1.
* Dynamic suspicion: a suspicion starts at ``max`` timeout and shrinks towards ``min`` as
  ``k`` independent confirmations arrive (``max - log(c + 1) / log(k + 1) * (max - min)``, in
  whole milliseconds, never below ``min``).
* The minimum suspicion timeout is ``mult * max(1, log10(n)) * interval``; the push-pull interval
  is stretched for clusters over 32 members.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "PUSH_PULL_SCALE_THRESHOLD",
    "Awareness",
    "Suspicion",
    "push_pull_scale",
    "suspicion_timeout",
]

PUSH_PULL_SCALE_THRESHOLD = 32


def suspicion_timeout(mult: int, n: int, interval: float) -> float:
    """memberlist's minimum suspicion timeout: ``mult * max(1, log10(n)) * interval``."""
    node_scale = max(1.0, math.log10(max(1, n)))
    return mult * math.floor(node_scale * 1000) / 1000 * interval


def push_pull_scale(interval: float, n: int) -> float:
    """Stretch the push-pull interval for clusters over 32 members, as memberlist does."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return interval * multiplier


class Awareness:
    """Lifeguard's local health score: 0 is healthy; it multiplies our timeouts by score + 1."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self.maximum - 1)

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)


@dataclass(slots=True)
class Suspicion:
    """A member under suspicion: its deadline shrinks with independent confirmations."""

    start: float
    k: int
    min: float
    max: float
    confirmations: set[str]
    deadline: float

    def confirm(self, from_node: str) -> bool:
        """Count an independent confirmation; True if it was new (and shortened the timeout)."""
        if len(self.confirmations) - 1 >= self.k or from_node in self.confirmations:
            return False
        self.confirmations.add(from_node)
        n = len(self.confirmations) - 1
        frac = math.log(n + 1) / math.log(self.k + 1)
        raw = self.max - frac * (self.max - self.min)
        timeout = max(math.floor(raw * 1000) / 1000, self.min)
        self.deadline = self.start + timeout
        return True
