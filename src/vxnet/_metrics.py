"""Prometheus metric families built from the plain counts that services keep."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["by_label"]

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
