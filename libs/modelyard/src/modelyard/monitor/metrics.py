"""The monitor's Prometheus metrics: its intake, and the latest closed window per key.

Each instance exports the windows of the partitions it holds: the gauges describe this
instance's share of the latest closed window of each key (its partitions merged); the
``<prefix>.monitor`` topic, merged by ``modelyard monitor show``, has the whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from modelyard.monitor.hops import WindowKey
from modelyard.monitor.judge import Assessment
from modelyard.monitor.windows import Window, WindowStats

__all__ = ["MonitorMetrics"]

_LABELS = list(WindowKey._fields)


@dataclass(slots=True)
class _Latest:
    start: float
    parts: dict[str, WindowStats] = field(default_factory=dict)


class MonitorMetrics:
    """Counters of what was read, gauges of the latest closed windows."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self.hops = Counter("modelyard_monitor_hops", "Hop records windowed.", registry=registry)
        self.undecodable = Counter(
            "modelyard_monitor_undecodable", "Audit values that are no record.", registry=registry
        )
        self.late = Counter(
            "modelyard_monitor_late", "Hops dropped: their window was forgotten.", registry=registry
        )
        self.replayed = Counter(
            "modelyard_monitor_replayed",
            "Audit records read again below their partition's counted offset, skipped.",
            registry=registry,
        )
        self.emitted = Counter(
            "modelyard_monitor_summaries", "Window summaries published.", registry=registry
        )
        self._requests = self._gauge("requests", "Requests in the latest closed window.")
        self._error_rate = self._gauge("error_rate", "Errors / requests, latest closed window.")
        self._p99 = self._gauge("p99_ms", "p99 latency (ms), latest closed window.")
        self._agreement = self._gauge("agreement", "Shadow agreement, latest closed window.")
        self._latest: dict[WindowKey, _Latest] = {}
        self.labels = Counter(
            "modelyard_monitor_labels", "Labels read, by what became of them "
            "(joined, unmatched, refused, late).", ["result"], registry=registry,
        )  # fmt: skip
        self.assessments = Counter(
            "modelyard_monitor_assessments",
            "Closed windows judged against their reference.",
            registry=registry,
        )
        self._psi = Gauge(
            "modelyard_monitor_drift_psi", "PSI of a monitored field, latest judged window.",
            [*_LABELS, "field"], registry=registry,
        )  # fmt: skip
        self._p_value = Gauge(
            "modelyard_monitor_drift_p_value",
            "Adjusted test p-value of a monitored field, latest judged window.",
            [*_LABELS, "field"], registry=registry,
        )  # fmt: skip
        self._drifted = self._gauge("drifted", "1 when a monitored field drifted, latest window.")
        self._p99_ratio = self._gauge("p99_ratio", "p99 over the active version's, latest window.")
        self._accuracy = self._gauge("accuracy", "Labels it answered right, latest window.")

    def _gauge(self, name: str, doc: str) -> Gauge:
        return Gauge(f"modelyard_monitor_window_{name}", doc, _LABELS, registry=self._registry)

    def observe(self, window: Window, source: str) -> None:
        """A summary was published: update the key's gauges if it is its latest window."""
        latest = self._latest.get(window.key)
        if latest is None or window.start > latest.start:
            latest = self._latest[window.key] = _Latest(window.start)
        elif window.start < latest.start:
            return
        latest.parts[source] = window.stats
        merged = WindowStats()
        for part in latest.parts.values():
            merged.merge(part)
        self._set(window.key, merged)

    def judged(self, assessment: Assessment) -> None:
        """An assessment was made: its figures, as gauges."""
        self.assessments.inc()
        key = assessment.key
        for drift in assessment.drift:
            self._psi.labels(*key, drift.field).set(drift.psi)
            self._p_value.labels(*key, drift.field).set(drift.p_value)
        self._drifted.labels(*key).set(int(assessment.drifted))
        if assessment.p99_ratio is not None:
            self._p99_ratio.labels(*key).set(assessment.p99_ratio)
        if assessment.accuracy is not None:
            self._accuracy.labels(*key).set(assessment.accuracy)

    def _set(self, key: WindowKey, stats: WindowStats) -> None:
        self._requests.labels(*key).set(stats.requests)
        self._error_rate.labels(*key).set(
            stats.error_count / stats.requests if stats.requests else 0.0
        )
        p99 = stats.latency.quantile(0.99)
        if p99 is not None:
            self._p99.labels(*key).set(p99)
        checked = stats.agree + stats.disagree
        if checked:
            self._agreement.labels(*key).set(stats.agree / checked)
