"""What a DNS server counts: queries by result and the time each took, for ``/metrics``.

One :class:`Tally` per answering loop (the agent's, and each worker process's); a worker sends
:meth:`Tally.snapshot` to the agent, which adds them up with :meth:`Tally.add`.
"""

from __future__ import annotations

import bisect
from typing import Any

__all__ = ["LATENCY_BUCKETS", "Tally"]

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0)


class Tally:
    """Queries by result (RCODE name, ``forwarded``, ``dropped``, ...) and a latency histogram
    over :data:`LATENCY_BUCKETS`, with the rate limiter's two counters beside them."""

    __slots__ = ("counts", "latency", "latency_sum", "limited", "slipped")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.limited = 0
        self.slipped = 0

    def count(self, what: str, took: float) -> None:
        """One query with result ``what`` that took ``took`` seconds."""
        self.counts[what] = self.counts.get(what, 0) + 1
        self.latency[bisect.bisect_left(LATENCY_BUCKETS, took)] += 1
        self.latency_sum += took

    def count_batch(self, served: int, missing: int, took: float) -> None:
        """``served`` answers of one batch, ``missing`` of them NXDOMAIN, each taking ``took``
        seconds (the batch's average)."""
        if not served:
            return
        counts = self.counts
        counts["NOERROR"] = counts.get("NOERROR", 0) + served - missing
        if missing:
            counts["NXDOMAIN"] = counts.get("NXDOMAIN", 0) + missing
        self.latency[bisect.bisect_left(LATENCY_BUCKETS, took)] += served
        self.latency_sum += took * served

    def snapshot(self) -> dict[str, Any]:
        """Everything counted so far, as JSON-ready data (:meth:`add` reads it)."""
        return {
            "counts": dict(self.counts),
            "latency": list(self.latency),
            "latency_sum": self.latency_sum,
            "limited": self.limited,
            "slipped": self.slipped,
        }

    def add(self, other: dict[str, Any]) -> None:
        """Add a :meth:`snapshot` (a worker's) to this tally; malformed parts are skipped."""
        counts = other.get("counts")
        if isinstance(counts, dict):
            for what, n in counts.items():
                if isinstance(what, str) and isinstance(n, int):
                    self.counts[what] = self.counts.get(what, 0) + n
        latency = other.get("latency")
        if isinstance(latency, list) and len(latency) == len(self.latency):
            for i, n in enumerate(latency):
                if isinstance(n, int):
                    self.latency[i] += n
        for name in ("latency_sum", "limited", "slipped"):
            value = other.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                setattr(self, name, getattr(self, name) + value)
