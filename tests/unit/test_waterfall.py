"""The terminal waterfall `modelyard trace` prints, from audit records (no I/O)."""

from __future__ import annotations

from typing import Any

from modelyard.audit import HopRecord, RequestRecord, utc
from modelyard.audit.waterfall import render_waterfall

T0 = 1_800_000_000.0
COMMON = {"request_id": "r-1", "pipeline": "docs", "caller": "alice", "trace_id": "ab" * 16}


def hop(stage: str, ref: str, start_ms: float, ms: float, **extra: Any) -> HopRecord:
    model, version = ref.split(":")
    fields: dict[str, Any] = {"outcome": "ok", "role": "active", **COMMON, **extra}
    return HopRecord(
        **fields,
        stage=stage,
        model=model,
        version=version,
        dispatched_at=utc(T0 + start_ms / 1000),
        finished_at=utc(T0 + (start_ms + ms) / 1000),
        latency_ms=ms,
        input_digest="0" * 64,
    )


def request(total_ms: float, **extra: Any) -> RequestRecord:
    fields: dict[str, Any] = {"outcome": "ok", **COMMON, **extra}
    return RequestRecord(
        **fields,
        spec_version=1,
        received_at=utc(T0),
        finished_at=utc(T0 + total_ms / 1000),
        latency_ms=total_ms,
        served_by={"ocr": "ocr:2", "sentiment": "sentiment:2"},
        skipped=("translate",),
        input_digest="0" * 64,
    )


RECORDS = [
    request(100.0),
    hop("sentiment", "sentiment:2", 60.0, 40.0),
    hop("ocr", "ocr:2", 0.0, 50.0),
    hop("ocr", "ocr:3", 0.0, 80.0, role="shadow", shadow=True),
]


def rows(lines: list[str]) -> list[list[str]]:
    return [
        line.split()[:4] for line in lines if "|" in line and not line.lstrip().startswith("stage")
    ]


def test_the_request_line_comes_first_with_total_outcome_and_served_by() -> None:
    lines = render_waterfall(RECORDS, width=20)
    assert lines[0] == "request r-1  pipeline docs  caller alice  ok  100.0 ms"
    assert lines[1].startswith(f"  trace {'ab' * 16}  received ")
    assert lines[2] == "  served_by ocr=ocr:2 sentiment=sentiment:2  (skipped: translate)"


def test_hops_in_dispatch_order_primary_before_its_shadow() -> None:
    assert rows(render_waterfall(RECORDS, width=20)) == [
        ["ocr", "ocr:2", "active", "ok"],
        ["ocr", "ocr:3", "shadow", "ok"],
        ["sentiment", "sentiment:2", "active", "ok"],
    ]


def test_bars_are_placed_and_sized_on_the_requests_timeline() -> None:
    lines = render_waterfall(RECORDS, width=20)
    bars = [line.split("|")[1] for line in lines if "|" in line and ("█" in line or "░" in line)]
    assert bars == [
        "██████████          ",  # 0-50 ms of 100 ms on 20 columns
        "░░░░░░░░░░░░░░░░    ",  # the shadow: lighter
        "            ████████",  # 60-100 ms
    ]


def test_a_legend_explains_the_shadow_bar_when_there_is_one() -> None:
    assert "shadow copy" in render_waterfall(RECORDS)[-1]
    assert not any("shadow copy" in line for line in render_waterfall(RECORDS[:3]))


def test_errors_and_retries_are_shown() -> None:
    failed = [
        request(50.0, outcome="model", error="sentiment raised"),
        hop("sentiment", "sentiment:2", 10.0, 30.0, outcome="model", error="boom", attempt=2),
    ]
    text = "\n".join(render_waterfall(failed))
    assert "caller alice  model  50.0 ms" in text
    assert "! model: sentiment raised" in text
    assert "! boom" in text
    assert "(attempt 2)" in text


def test_hops_without_a_request_record_say_it_is_unfinished() -> None:
    lines = render_waterfall([hop("ocr", "ocr:2", 0.0, 5.0)])
    assert "in flight?" in lines[0]
    assert any("no request record yet" in line for line in lines)
    assert rows(lines) == [["ocr", "ocr:2", "active", "ok"]]


def test_no_records_render_nothing() -> None:
    assert render_waterfall([]) == []


def test_a_hop_recorded_twice_is_drawn_once_and_a_retry_is_not_a_duplicate() -> None:
    again = hop("ocr", "ocr:3", 0.0, 80.0, role="shadow", shadow=True)  # re-audited
    retry = hop("sentiment", "sentiment:2", 60.0, 40.0, attempt=1)
    assert rows(render_waterfall([*RECORDS, again, retry], width=20)) == [
        ["ocr", "ocr:2", "active", "ok"],
        ["ocr", "ocr:3", "shadow", "ok"],
        ["sentiment", "sentiment:2", "active", "ok"],
        ["sentiment", "sentiment:2", "active", "ok"],
    ]


def test_records_whose_clocks_disagree_wildly_still_draw() -> None:
    # a request "received" 7,900 years after its hop ran: the bar's offset once overflowed
    # an index (OverflowError) instead of being drawn at the edge
    late = RequestRecord(
        **{"outcome": "ok", **COMMON},
        spec_version=1,
        received_at=utc(T0).replace(year=9922),
        finished_at=utc(T0),
        latency_ms=1.0,
        input_digest="0" * 64,
    )
    huge = hop("ocr", "ocr:2", 0.0, 50.0).model_copy(update={"latency_ms": 1e308})  # bar > inf
    lines = render_waterfall([late, huge])
    bars = [line.split("|")[1] for line in lines if "ocr:2" in line]
    assert bars
    assert all(len(bar) == 40 for bar in bars)
