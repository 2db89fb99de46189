"""Window summaries: the JSON on ``<prefix>.monitor`` (docs/monitor.md), and what readers do
with them: combine the partial summaries of one window, and merge tumbling windows into a
hopping view.

Each source partition's windows are summarised on their own (a *partial*: ``source`` names the
partition); a reader keeps the latest ``revision`` of each (window, source) and merges the
sources, which is exact for counts and as accurate as the sketch for quantiles.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelyard.monitor.hops import WindowKey
from modelyard.monitor.windows import Window, WindowStats

__all__ = [
    "SCHEMA",
    "WindowSummary",
    "combine",
    "encode_summary",
    "hopping",
    "iso",
    "parse_iso",
    "summary_key",
]

SCHEMA = 1


def iso(ts: float) -> str:
    """``2026-12-07T01:00:00Z``: a summary's times."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    """The unix time of a summary's ``iso`` text."""
    return datetime.fromisoformat(text).timestamp()


def summary_key(window: Window, source: str) -> bytes:
    """The record key: one per (window, source), so a compacted topic keeps the latest."""
    return f"{window.key.label()}/{int(window.start)}/{source}".encode()


def encode_summary(window: Window, source: str, emitted_at: float) -> bytes:
    """The summary record of ``window`` as counted from ``source`` (JSON, UTF-8)."""
    body = {
        "schema": SCHEMA, "kind": "window", **window.key._asdict(),
        "start": iso(window.start), "end": iso(window.end), "size_s": window.size_s,
        "source": source, "revision": window.revision, "emitted_at": iso(emitted_at),
        **figures(window.stats),
    }  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode()


def figures(stats: WindowStats) -> dict[str, Any]:
    """The derived figures of ``stats``, then its raw counts and sketch."""
    checked = stats.agree + stats.disagree
    raw = stats.to_json()
    return {
        "requests": stats.requests,
        "error_rate": stats.error_count / stats.requests if stats.requests else 0.0,
        "latency_ms": stats.latency.stats(),
        "agreement": stats.agree / checked if checked else None,
        **raw,
    }


@dataclass(slots=True)
class WindowSummary:
    """A window as a reader sees it: one key, one span, its figures, the sources merged."""

    key: WindowKey
    start: float
    size_s: float
    stats: WindowStats
    sources: dict[str, int] = field(default_factory=dict)  # source -> revision

    @property
    def end(self) -> float:
        return self.start + self.size_s

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowSummary:
        """A summary record (ValueError/KeyError when it is not one)."""
        if data.get("schema") != SCHEMA or data.get("kind") != "window":
            raise ValueError("not a window summary")
        key = WindowKey(*(str(data[f]) for f in WindowKey._fields))
        return cls(
            key=key, start=parse_iso(data["start"]), size_s=float(data["size_s"]),
            stats=WindowStats.from_json(data), sources={data["source"]: int(data["revision"])},
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The merged window's figures (no source, no revision)."""
        return {
            **self.key._asdict(), "start": iso(self.start), "end": iso(self.end),
            "size_s": self.size_s, **figures(self.stats),
        }  # fmt: skip


def combine(partials: Iterable[WindowSummary]) -> list[WindowSummary]:
    """One summary per (key, start): the latest revision of each source, merged; ordered by
    key then start."""
    latest: dict[tuple[WindowKey, float, str], WindowSummary] = {}
    for part in partials:
        for source, revision in part.sources.items():
            wid = (part.key, part.start, source)
            held = latest.get(wid)
            if held is None or held.sources[source] <= revision:
                latest[wid] = part
    merged: dict[tuple[WindowKey, float], WindowSummary] = {}
    for (key, start, source), part in sorted(latest.items(), key=lambda kv: kv[0]):
        into = merged.get((key, start))
        if into is None:
            merged[(key, start)] = into = WindowSummary(key, start, part.size_s, WindowStats())
        into.stats.merge(part.stats)
        into.sources[source] = part.sources[source]
    return [merged[k] for k in sorted(merged)]


def hopping(windows: Iterable[WindowSummary], size_s: float, every_s: float) -> list[WindowSummary]:
    """A hopping view (``size_s`` long, one every ``every_s``) merged from combined tumbling
    windows: each view holds the tumbling windows that start within it. Both spans must be
    multiples of the tumbling size. Views end at multiples of ``every_s``, from the first that
    holds a window to the one after the last window; ordered by key then start."""
    by_key: dict[WindowKey, list[WindowSummary]] = {}
    for window in windows:
        if size_s % window.size_s or every_s % window.size_s:
            raise ValueError(f"{size_s}/{every_s} s is not a multiple of {window.size_s} s")
        by_key.setdefault(window.key, []).append(window)
    return [view for key in sorted(by_key) for view in _views(key, by_key[key], size_s, every_s)]


def _views(
    key: WindowKey, windows: list[WindowSummary], size_s: float, every_s: float
) -> list[WindowSummary]:
    first = min(w.end for w in windows)
    last = max(w.end for w in windows)
    end = -(-first // every_s) * every_s  # the first view end at or after the first window's
    views = []
    while end - size_s < last:
        inside = [w for w in windows if end - size_s <= w.start < end]
        if inside:
            view = WindowSummary(key, end - size_s, size_s, WindowStats())
            for w in inside:
                view.stats.merge(w.stats)
                view.sources.update(w.sources)
            views.append(view)
        end += every_s
    return views
