"""`modelyard monitor show`'s table: windows combined per key, the last N, sparklines."""

from __future__ import annotations

import json

from modelyard.monitor.hops import Hop, WindowKey
from modelyard.monitor.show import render, sparkline
from modelyard.monitor.summary import WindowSummary, encode_summary, iso
from modelyard.monitor.windows import TumblingWindows

KEY = WindowKey("docs", "ocr", "tesseract", "5", "canary")
T0 = 1_800_000_000.0


def test_sparkline_scales_to_the_largest_value() -> None:
    assert sparkline([0.0, 1.0, 2.0, None, 4.0]) == "▁▃▅ █"
    assert sparkline([0.0, 0.0]) == "▁▁"


def test_render_prints_the_latest_window_and_trends_per_key() -> None:
    windows = TumblingWindows(60, retention_s=100_000, clock=lambda: T0 + 10_000)
    for minute in range(12):
        for i in range(10):
            outcome = "model" if i < minute % 3 else "ok"
            windows.add(Hop(KEY, T0 + 60 * minute + i, outcome, 10.0 * (minute + 1)))
    windows.add(Hop(KEY._replace(pipeline="other"), T0, "ok", 1.0))
    parts = [
        WindowSummary.from_json(json.loads(encode_summary(w, "a/0", T0))) for w in windows.due()
    ]
    rows = render(parts, "docs", last=4).splitlines()
    assert len(rows) == 2
    assert rows[0].split()[:4] == ["stage", "version", "role", "window"]
    # the last window: minute 11 (2 errors of 10), every latency 120 ms (120.3 in the sketch);
    # trends over minutes 8..11: p99 90, 100, 110, 120 ms and 2, 0, 1, 2 errors; not judged
    # (no assessment given): no drift, no accuracy
    assert rows[1].split() == ["ocr", "tesseract:5", "canary", "08:12:00", "10", "20.0", "120.3",
                               "120.3", "120.3", "-", "-", "-", "▆▇▇█", "█▁▅█"]  # fmt: skip
    assert render(parts, "nothing", last=4) == "no windows for pipeline 'nothing' yet"


def test_render_shows_the_windows_assessment() -> None:
    windows = TumblingWindows(60, clock=lambda: T0 + 600)
    windows.add(Hop(KEY, T0 + 1, "ok", 5.0))
    (part,) = [WindowSummary.from_json(json.loads(encode_summary(w, "a/0", T0)))
               for w in windows.due()]  # fmt: skip
    judged = {"drifted": True, "accuracy": 0.75,
              "drift": [{"field": "label", "psi": 0.4}, {"field": "len", "psi": 1.25}]}  # fmt: skip
    row = render([part], "docs", last=1, assessments={(KEY, iso(part.start)): judged})
    assert row.splitlines()[1].split()[10:12] == ["1.25!", "75%"]
