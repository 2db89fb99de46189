"""Tumbling windows over hops: the monitor's core, plain Python (no Kafka, no faust).

A hop falls in the window ``[start, start + size)`` of its ``finished_at`` (event time), per
:class:`WindowKey`. A window is *due* once the wall clock passes its end plus ``grace_s`` and it
changed since it was last emitted: the first emission of a window is its summary, a later one
(a hop that came late, within ``retention_s``) revises it with the cumulative figures, so
whatever keeps the latest revision per window has the right total. A window is forgotten
``retention_s`` after its end; a hop for a forgotten window is counted as ``late`` and dropped.

The windows of one source partition live in one :class:`TumblingWindows`; their state is JSON
(:meth:`TumblingWindows.state` / :meth:`TumblingWindows.restore`) so an adapter can keep it in a
changelog-backed table and rebuild it after a restart or a rebalance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from modelyard.monitor.hops import Hop, WindowKey
from modelyard.monitor.sketch import LatencySketch, ValueSketch

__all__ = [
    "Categories",
    "Distribution",
    "TumblingWindows",
    "Window",
    "WindowStats",
    "distribution_from_json",
    "window_start",
]

MAX_CATEGORIES = 64  # per field and window: a free-text field cannot grow a window without end
OTHER = "(other)"

WindowId = tuple[WindowKey, float]


def window_start(ts: float, size_s: float) -> float:
    """The start of the tumbling window of size ``size_s`` holding ``ts`` (epoch-aligned)."""
    return (ts // size_s) * size_s


@dataclass(slots=True)
class Categories:
    """Counts per value of a categorical field (past ``MAX_CATEGORIES`` values: ``OTHER``)."""

    counts: dict[str, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(sum(self.counts.values()))

    def add(self, value: str, n: float = 1) -> None:
        if value not in self.counts and len(self.counts) >= MAX_CATEGORIES:
            value = OTHER
        self.counts[value] = self.counts.get(value, 0) + n

    def merge(self, other: Categories) -> None:
        for value, n in other.counts.items():
            self.add(value, n)


Distribution = Categories | ValueSketch


def _distribution_json(dist: Distribution) -> dict[str, Any]:
    if isinstance(dist, Categories):
        return {"kind": "categorical", "counts": dict(sorted(dist.counts.items()))}
    return {"kind": "numeric", "sketch": dist.to_json()}


def distribution_from_json(data: dict[str, Any]) -> Distribution:
    if data["kind"] == "categorical":
        return Categories({str(k): float(v) for k, v in data["counts"].items()})
    return ValueSketch.from_json(data["sketch"])


def _merge_into(fields: dict[str, Distribution], name: str, dist: Distribution) -> None:
    held = fields.get(name)
    if held is None:
        held = fields[name] = Categories() if isinstance(dist, Categories) else ValueSketch()
    if isinstance(held, Categories) and isinstance(dist, Categories):
        held.merge(dist)
    elif isinstance(held, ValueSketch) and isinstance(dist, ValueSketch):
        held.merge(dist)  # a field that changed kind keeps its first: the rest is not comparable


@dataclass(slots=True)
class WindowStats:
    """Requests, errors by outcome code, latency, shadow agreement, the distributions of the
    monitored values and label agreement of one window."""

    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: LatencySketch = field(default_factory=LatencySketch)
    agree: int = 0
    disagree: int = 0
    fields: dict[str, Distribution] = field(default_factory=dict)
    labelled: int = 0  # labels joined to this key's hops, by the labels' time
    correct: int = 0  # of which the label equals what the version answered

    def add(self, hop: Hop) -> None:
        self.requests += 1
        if hop.outcome != "ok":
            self.errors[hop.outcome] = self.errors.get(hop.outcome, 0) + 1
        self.latency.add(hop.latency_ms)
        if hop.agrees is not None:
            if hop.agrees:
                self.agree += 1
            else:
                self.disagree += 1
        for name, value in hop.observed.items():
            self._observe(name, value)

    def _observe(self, name: str, value: str | float) -> None:
        held = self.fields.get(name)
        if isinstance(value, str):
            if held is None:
                held = self.fields[name] = Categories()
            if isinstance(held, Categories):
                held.add(value)
        else:
            if held is None:
                held = self.fields[name] = ValueSketch()
            if isinstance(held, ValueSketch):
                held.add(float(value))

    def add_label(self, correct: bool) -> None:
        self.labelled += 1
        self.correct += int(correct)

    def merge(self, other: WindowStats) -> None:
        """Add ``other``'s figures (another window, another partition, another instance)."""
        self.requests += other.requests
        for code, n in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + n
        self.latency.merge(other.latency)
        self.agree += other.agree
        self.disagree += other.disagree
        for name, dist in other.fields.items():
            _merge_into(self.fields, name, dist)
        self.labelled += other.labelled
        self.correct += other.correct

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "errors": dict(sorted(self.errors.items())),
            "agree": self.agree, "disagree": self.disagree, "sketch": self.latency.to_json(),
            "fields": {n: _distribution_json(d) for n, d in sorted(self.fields.items())},
            "labelled": self.labelled, "correct": self.correct,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowStats:
        return cls(
            requests=int(data["requests"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            latency=LatencySketch.from_json(data["sketch"]),
            agree=int(data["agree"]),
            disagree=int(data["disagree"]),
            fields={str(n): distribution_from_json(d) for n, d in data.get("fields", {}).items()},
            labelled=int(data.get("labelled", 0)),
            correct=int(data.get("correct", 0)),
        )


@dataclass(slots=True)
class Window:
    """One tumbling window of one key, and how far its emission got."""

    key: WindowKey
    start: float
    size_s: float
    stats: WindowStats = field(default_factory=WindowStats)
    revision: int = 0  # bumped by every change
    emitted: int = -1  # the revision last emitted (-1: never)

    @property
    def end(self) -> float:
        return self.start + self.size_s

    def to_json(self) -> dict[str, Any]:
        return {
            "key": list(self.key), "start": self.start, "size_s": self.size_s,
            "revision": self.revision, "stats": self.stats.to_json(),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Window:
        """A window restored from its state; not yet emitted here (emitting it again is
        harmless: readers keep the latest revision)."""
        return cls(
            key=WindowKey(*data["key"]), start=float(data["start"]),
            size_s=float(data["size_s"]), stats=WindowStats.from_json(data["stats"]),
            revision=int(data["revision"]),
        )  # fmt: skip


class TumblingWindows:
    """The open and recently closed windows of one stream (one source partition)."""

    def __init__(
        self,
        size_s: float = 60.0,
        *,
        grace_s: float = 5.0,
        retention_s: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if size_s <= 0 or grace_s < 0 or retention_s < grace_s:
            raise ValueError("need size_s > 0 and 0 <= grace_s <= retention_s")
        self.size_s, self.grace_s, self.retention_s = size_s, grace_s, retention_s
        self._clock = clock
        self._windows: dict[WindowId, Window] = {}
        self._touched: set[WindowId] = set()
        self.late = 0  # hops dropped: their window was already forgotten

    def __len__(self) -> int:
        return len(self._windows)

    def add(self, hop: Hop) -> bool:
        """Count ``hop`` in its window; False (and counted as late) when that is forgotten."""
        window = self._window(hop.key, hop.finished_at)
        if window is None:
            return False
        window.stats.add(hop)
        return True

    def add_label(self, key: WindowKey, at: float, correct: bool) -> bool:
        """Count a label given at ``at`` on a hop of ``key``; False when that window is
        forgotten (counted as late)."""
        window = self._window(key, at)
        if window is None:
            return False
        window.stats.add_label(correct)
        return True

    def _window(self, key: WindowKey, ts: float) -> Window | None:
        """The window of ``key`` holding ``ts``, marked changed; None (late) if forgotten."""
        start = window_start(ts, self.size_s)
        if self._clock() >= start + self.size_s + self.retention_s:
            self.late += 1
            return None
        wid = (key, start)
        window = self._windows.get(wid)
        if window is None:
            window = self._windows[wid] = Window(key, start, self.size_s)
        window.revision += 1
        self._touched.add(wid)
        return window

    def add_all(self, hops: Iterable[Hop]) -> int:
        """Count every hop; how many were counted (not late)."""
        return sum(self.add(hop) for hop in hops)

    def due(self) -> list[Window]:
        """Windows closed (end + grace passed) with a change not yet emitted, oldest first;
        they are marked emitted."""
        now = self._clock()
        ready = [
            w for w in self._windows.values()
            if now >= w.end + self.grace_s and w.emitted < w.revision
        ]  # fmt: skip
        for window in ready:
            window.emitted = window.revision
        return sorted(ready, key=lambda w: (w.start, w.key))

    def expire(self) -> list[Window]:
        """Forget windows past their retention (emitted ones; a window is due long before)."""
        now = self._clock()
        old = [w for w in self._windows.values() if now >= w.end + self.retention_s]
        for window in old:
            del self._windows[(window.key, window.start)]
            self._touched.discard((window.key, window.start))
        return old

    def open_windows(self) -> list[Window]:
        """Every window held, oldest first."""
        return sorted(self._windows.values(), key=lambda w: (w.start, w.key))

    def take_touched(self) -> list[Window]:
        """Windows changed since the last call (what an adapter writes to its table)."""
        touched = [self._windows[wid] for wid in self._touched if wid in self._windows]
        self._touched.clear()
        return touched

    def restore(self, window: Window) -> None:
        """Hold a window rebuilt from saved state (a restart or a partition taken over); the
        saved one wins over nothing, a held one with more changes wins over the saved one."""
        wid = (window.key, window.start)
        held = self._windows.get(wid)
        if held is None or held.revision < window.revision:
            self._windows[wid] = window
