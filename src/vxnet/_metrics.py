"""Prometheus metric families built from the plain counts that services keep."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["by_label", "histogram"]

_Family = TypeVar("_Family", CounterMetricFamily, GaugeMetricFamily)


def by_label(
    kind: type[_Family], name: str, documentation: str, label: str, values: Mapping[str, float]
) -> _Family:
    """A family of ``kind`` with one sample per entry of ``values`` (label value: value), in
    label order."""
    family = kind(name, documentation, labels=[label])
    for value, amount in sorted(values.items()):
        family.add_metric([value], amount)
    return family


def histogram(
    name: str, documentation: str, bounds: Sequence[float], counts: Sequence[int], total: float
) -> HistogramMetricFamily:
    """A histogram from per-bucket ``counts`` (one more than ``bounds``: the last counts what
    is above every bound) and the ``total`` of the values counted."""
    buckets, cumulative = [], 0
    for bound, n in zip([*bounds, float("inf")], counts, strict=True):
        cumulative += n
        buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], buckets, total)
    return family
