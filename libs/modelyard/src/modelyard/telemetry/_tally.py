"""Counters and histograms for the per-request hot path, exposed to Prometheus at scrape time.

prometheus_client's labelled children take a lock and run several checks per ``inc`` and per
``observe``, and a stage records a counter and up to three histograms for every request. Here a
request costs one lock, a bisect and a few additions on plain numbers; samples are built only
when ``/metrics`` is scraped, with prometheus_client's names, labels and bucket bounds.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence
from typing import TypeVar

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["Tally"]

Labels = tuple[str, ...]


class TallyCounter:
    """Not locked itself: update it under ``Tally.lock``."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + 1

    def family(self, prefix: Labels) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self.values.items():
            family.add_metric([*prefix, *labels], value)
        return family


class TallyHistogram:
    """Not locked itself: update it under ``Tally.lock``."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], bounds: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.bounds = tuple(float(bound) for bound in bounds)  # le labels as prometheus_client
        self.rows: dict[Labels, list[float]] = {}  # per bucket (the last: +Inf) counts, then sum

    def observe(self, labels: Labels, value: float) -> None:
        row = self.rows.get(labels)
        if row is None:
            row = self.rows[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect.bisect_left(self.bounds, value)] += 1  # the first bound >= value ("le")
        row[-1] += value

    def family(self, prefix: Labels) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        les = [*map(floatToGoString, self.bounds), "+Inf"]
        for labels, row in self.rows.items():
            cumulative, buckets = 0.0, []
            for le, count in zip(les, row[:-1], strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric([*prefix, *labels], buckets, row[-1])
        return family


_Metric = TypeVar("_Metric", TallyCounter, TallyHistogram)


class Tally(Collector):
    """A registry collector whose metrics all start with the same label values (model, version).

    Update its metrics under ``lock``; several updates for one request share one acquisition.
    """

    def __init__(self, prefix_names: Sequence[str], prefix: Labels) -> None:
        self._prefix_names, self._prefix = list(prefix_names), prefix
        self._metrics: list[TallyCounter | TallyHistogram] = []
        self.lock = threading.Lock()

    def counter(self, name: str, documentation: str, labelnames: Sequence[str]) -> TallyCounter:
        return self._add(TallyCounter(name, documentation, [*self._prefix_names, *labelnames]))

    def histogram(
        self, name: str, documentation: str, labelnames: Sequence[str], bounds: Sequence[float]
    ) -> TallyHistogram:
        labels = [*self._prefix_names, *labelnames]
        return self._add(TallyHistogram(name, documentation, labels, bounds))

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            families = [metric.family(self._prefix) for metric in self._metrics]
        yield from families

    def _add(self, metric: _Metric) -> _Metric:
        self._metrics.append(metric)
        return metric
