"""The monitor's window core: counts, errors, quantiles within the sketch's accuracy, agreement,
emission and revision, state round trips, merging partials, and the hopping view."""

from __future__ import annotations

import json
import random

import pytest
from modelyard.audit import encode_audit_values
from modelyard.errors import DecodeError
from modelyard.monitor.hops import Hop, WindowKey, parse_hop
from modelyard.monitor.sketch import RELATIVE_ACCURACY, LatencySketch
from modelyard.monitor.summary import WindowSummary, combine, encode_summary, hopping
from modelyard.monitor.windows import TumblingWindows, Window, window_start

ACTIVE = WindowKey("docs", "sentiment", "vader", "1", "active")
SHADOW = WindowKey("docs", "sentiment", "vader", "2", "shadow")
T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def hop(t: float, latency: float = 10.0, outcome: str = "ok", key: WindowKey = ACTIVE,
        agrees: bool | None = None) -> Hop:  # fmt: skip
    return Hop(key, t, outcome, latency, agrees)


def exact(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))]


def assert_close(got: float | None, want: float) -> None:
    assert got is not None
    assert abs(got - want) <= RELATIVE_ACCURACY * want + 1e-9, (got, want)


def test_window_start_is_epoch_aligned() -> None:
    assert window_start(T0 + 59.9, 60) == T0
    assert window_start(T0 + 60, 60) == T0 + 60


def test_counts_errors_and_quantiles_per_window_and_key() -> None:
    clock = Clock(T0)
    windows = TumblingWindows(60, grace_s=5, clock=clock)
    rng = random.Random(7)
    latencies = [rng.lognormvariate(3, 1) for _ in range(1000)]
    for i, lat in enumerate(latencies):
        outcome = "deadline" if i % 50 == 0 else "model" if i % 100 == 1 else "ok"
        windows.add(hop(T0 + (i % 60), lat, outcome))
    windows.add(hop(T0 + 61, 5.0))  # the next window
    windows.add(hop(T0 + 3, 7.0, key=SHADOW, agrees=True))
    windows.add(hop(T0 + 4, 9.0, key=SHADOW, agrees=False))
    windows.add(hop(T0 + 5, 9.0, key=SHADOW, agrees=True))
    assert windows.due() == []  # not closed yet
    clock.now = T0 + 64.9
    assert windows.due() == []  # grace
    clock.now = T0 + 65
    due = windows.due()
    assert [(w.key, w.start) for w in due] == [(ACTIVE, T0), (SHADOW, T0)]
    active, shadow = (w.stats for w in due)
    assert active.requests == 1000
    assert active.errors == {"deadline": 20, "model": 10}
    for q in (0.5, 0.95, 0.99):
        assert_close(active.latency.quantile(q), exact(latencies, q))
    assert (shadow.requests, shadow.agree, shadow.disagree) == (3, 2, 1)
    assert windows.due() == []  # emitted once
    clock.now = T0 + 125
    assert [(w.start, w.stats.requests) for w in windows.due()] == [(T0 + 60, 1)]


def test_a_late_hop_revises_its_window_and_a_forgotten_one_is_dropped() -> None:
    clock = Clock(T0 + 70)
    windows = TumblingWindows(60, grace_s=5, retention_s=120, clock=clock)
    windows.add(hop(T0 + 1))
    (first,) = windows.due()
    windows.add(hop(T0 + 2))  # late, within retention
    (again,) = windows.due()
    assert again is first
    assert again.stats.requests == 2
    assert again.revision == 2
    clock.now = T0 + 180
    assert windows.expire() == [first]
    assert len(windows) == 0
    assert windows.add(hop(T0 + 3)) is False
    assert windows.late == 1


def test_state_round_trips_through_json() -> None:
    clock = Clock(T0)
    windows = TumblingWindows(60, clock=clock)
    for i in range(100):
        windows.add(hop(T0 + i % 60, float(i), "ok" if i % 10 else "deadline"))
    (touched,) = windows.take_touched()
    restored = Window.from_json(json.loads(json.dumps(touched.to_json())))
    assert restored.stats.to_json() == touched.stats.to_json()
    assert restored.revision == 100
    assert restored.emitted == -1
    other = TumblingWindows(60, clock=clock)
    other.restore(restored)
    assert other.open_windows()[0].stats.requests == 100
    assert windows.take_touched() == []


def test_sketches_merge_to_the_sketch_of_both_samples() -> None:
    rng = random.Random(1)
    a, b = LatencySketch(), LatencySketch()
    left = [rng.uniform(1, 100) for _ in range(500)]
    right = [rng.uniform(50, 900) for _ in range(1500)]
    for v in left:
        a.add(v)
    for v in right:
        b.add(v)
    a.merge(LatencySketch.from_json(json.loads(json.dumps(b.to_json()))))
    assert a.count == 2000
    for q in (0.5, 0.95, 0.99):
        assert_close(a.quantile(q), exact(left + right, q))
    stats = a.stats()
    assert stats["min"] == min(left + right)
    assert stats["max"] == max(left + right)


def summaries(windows: TumblingWindows, source: str) -> list[WindowSummary]:
    return [
        WindowSummary.from_json(json.loads(encode_summary(w, source, T0))) for w in windows.due()
    ]


def test_partials_from_two_sources_combine_and_the_latest_revision_wins() -> None:
    clock = Clock(T0)
    p0, p1 = TumblingWindows(60, clock=clock), TumblingWindows(60, clock=clock)
    lat0 = [float(v) for v in range(1, 301)]
    lat1 = [float(v) for v in range(301, 401)]
    for v in lat0:
        p0.add(hop(T0 + 1, v))
    for v in lat1[:50]:
        p1.add(hop(T0 + 2, v, "deadline"))
    clock.now = T0 + 70
    first = summaries(p0, "a/0") + summaries(p1, "a/1")
    for v in lat1[50:]:
        p1.add(hop(T0 + 2, v, "deadline"))  # late: a second revision of a/1
    revised = summaries(p1, "a/1")
    (merged,) = combine([*revised, *first, *first])  # any order, duplicates included
    assert merged.stats.requests == 400
    assert merged.stats.errors == {"deadline": 100}
    assert merged.sources == {"a/0": 300, "a/1": 100}
    assert_close(merged.stats.latency.quantile(0.99), exact(lat0 + lat1, 0.99))
    assert merged.to_json()["error_rate"] == 0.25


def test_hopping_view_merges_five_tumbling_windows_every_minute() -> None:
    clock = Clock(T0)
    windows = TumblingWindows(60, clock=clock)
    for minute in range(7):
        for _ in range(minute + 1):
            windows.add(hop(T0 + 60 * minute + 1, 10.0 * (minute + 1)))
    clock.now = T0 + 1000
    tumbling = combine(summaries(windows, "a/0"))
    views = hopping(tumbling, 300, 60)
    got = [(v.start - T0, v.stats.requests) for v in views]
    # minute m holds m + 1 hops; views end at T0+60 ... T0+420+300, each counting the
    # minutes that start inside it
    assert got == [
        (-240, 1), (-180, 3), (-120, 6), (-60, 10), (0, 15), (60, 20), (120, 25),
        (180, 22), (240, 18), (300, 13), (360, 7),
    ]  # fmt: skip
    assert views[4].stats.latency.stats()["max"] == 50.0
    with pytest.raises(ValueError, match="multiple"):
        hopping(tumbling, 90, 60)


def test_parse_hop_reads_hop_records_and_skips_the_rest() -> None:
    value = encode_audit_values("hop", {
        "request_id": "r1", "pipeline": "docs", "outcome": "ok", "stage": "sentiment",
        "model": "vader", "version": "2", "role": "shadow", "shadow": True,
        "dispatched_at": T0, "finished_at": T0 + 0.25, "latency_ms": 250.0,
        "input_digest": "00", "agrees": False,
        "observed": {"label": "neutral", "scores.0": 0.5, "bad": [1], "flag": True},
    })  # fmt: skip
    observed = {"label": "neutral", "scores.0": 0.5}  # lists and booleans are no observation
    assert parse_hop(value) == Hop(SHADOW, T0 + 0.25, "ok", 250.0, False, observed, "r1")
    request = encode_audit_values("request", {"request_id": "r1", "pipeline": "docs"})
    assert parse_hop(request) is None
    with pytest.raises(DecodeError):
        parse_hop(b"not json")
    with pytest.raises(DecodeError):
        parse_hop(b'{"kind": "hop"}')
