"""The pure request flow over the reference pipeline: branches, joins, versions, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelyard.control import (
    Canary,
    ControlState,
    GuardRule,
    PipelineRouting,
    Shadow,
    StageRouting,
)
from modelyard.graph import load_spec, parse_spec
from modelyard.graph.flow import Dispatch, RequestFlow
from modelyard.router.guards import GuardWatch
from modelyard.wire import Envelope, ErrorInfo

SPEC = load_spec(Path(__file__).resolve().parents[2] / "pipelines" / "docs.yaml")
ACTIVE = {"ocr": "2", "langid": "1", "translate": "1", "sentiment": "2"}


def _routing(**stages: StageRouting) -> ControlState:
    base = {name: StageRouting(active=v) for name, v in ACTIVE.items()}
    return ControlState({"docs": PipelineRouting(pipeline="docs", stages={**base, **stages})})


def _b(text: str) -> np.ndarray[Any, Any]:
    out = np.empty(1, dtype=object)
    out[:] = [text.encode()]
    return out


def _flow(request_id: str = "r1") -> RequestFlow:
    request = Envelope(request_id, {"image": _b("png")}, pipeline="docs", caller="alice")
    return RequestFlow(SPEC, request, sticky_key=request_id)


def _reply(
    flow: RequestFlow, sent: Dispatch, routing: ControlState, **fields: Any
) -> list[Dispatch]:
    assert flow.accept(sent.stage, Envelope(flow.request_id, fields), sent.attempt)
    return flow.advance(routing)


def test_english_skips_translation_and_scores_the_ocr_text() -> None:
    routing, flow = _routing(), _flow()
    [ocr] = flow.advance(routing)
    assert (ocr.stage, ocr.served_by, ocr.role) == ("ocr", "ocr:2", "active")
    [langid] = _reply(flow, ocr, routing, text=_b("Lovely day"))
    assert langid.fields["text"].tolist() == [b"Lovely day"]
    [sentiment] = _reply(flow, langid, routing, language=_b("en"))
    assert sentiment.stage == "sentiment"
    assert "translate" in flow.skipped
    assert sentiment.fields["text"].tolist() == [b"Lovely day"]
    assert _reply(flow, sentiment, routing, label=_b("positive"), scores=np.ones(3)) == []
    assert flow.finished
    result = flow.result()
    assert result.fields["language"].tolist() == [b"en"]
    assert result.fields["sentiment"].tolist() == [b"positive"]
    assert "translation" not in result.fields
    assert "translation_status" not in result.fields
    assert result.served_by == {"ocr": "ocr:2", "langid": "langid:1", "sentiment": "sentiment:2"}
    assert result.error is None
    assert result.caller == "alice"


def test_spanish_is_translated_and_sentiment_reads_the_translation() -> None:
    routing, flow = _routing(), _flow()
    [ocr] = flow.advance(routing)
    [langid] = _reply(flow, ocr, routing, text=_b("Hola"))
    [translate] = _reply(flow, langid, routing, language=_b("es"))
    assert translate.fields["language"].tolist() == [b"es"]
    [sentiment] = _reply(flow, translate, routing, translation=_b("Hello"), status=_b("translated"))
    assert sentiment.fields["text"].tolist() == [b"Hello"]


def test_unsupported_language_skips_sentiment_and_says_so() -> None:
    routing, flow = _routing(), _flow()
    [ocr] = flow.advance(routing)
    [langid] = _reply(flow, ocr, routing, text=_b("Hallo"))
    [translate] = _reply(flow, langid, routing, language=_b("de"))
    assert _reply(flow, translate, routing, translation=_b(""), status=_b("unsupported")) == []
    assert flow.finished
    assert flow.skipped == {"sentiment"}
    assert flow.result().fields["translation_status"].tolist() == [b"unsupported"]
    assert "sentiment" not in flow.result().fields


def test_duplicate_and_stale_replies_are_refused() -> None:
    routing, flow = _routing(), _flow()
    [_ocr] = flow.advance(routing)
    reply = Envelope("r1", {"text": _b("x")})
    assert not flow.accept("ocr", reply, attempt=1)  # not the attempt that was sent
    assert flow.accept("ocr", reply, attempt=0)
    assert not flow.accept("ocr", reply, attempt=0)  # redelivered: already taken
    assert not flow.accept("sentiment", reply, attempt=0)  # never dispatched


def test_a_stage_error_fails_the_request_with_that_stage() -> None:
    routing, flow = _routing(), _flow()
    [_ocr] = flow.advance(routing)
    error = ErrorInfo("validation", "not an image")
    assert flow.accept("ocr", Envelope("r1", {}, error=error), 0)
    assert flow.finished
    assert flow.advance(routing) == []
    result = flow.result()
    assert result.error == ErrorInfo("validation", "not an image", "ocr")
    assert result.fields == {}
    assert result.served_by == {"ocr": "ocr:2"}


def test_no_active_version_is_a_readable_error() -> None:
    routing = ControlState({"docs": PipelineRouting(pipeline="docs")})
    flow = _flow()
    assert flow.advance(routing) == []
    assert flow.error is not None
    assert flow.error.code == "unavailable"
    assert "no active version" in flow.error.message


def test_shadow_copy_goes_to_the_shadow_version_beside_the_primary() -> None:
    routing = _routing(ocr=StageRouting(active="2", shadow=Shadow(version="1", sample_rate=1.0)))
    primary, shadow = _flow().advance(routing)
    assert (primary.served_by, primary.role) == ("ocr:2", "active")
    assert (shadow.served_by, shadow.role, shadow.shadow) == ("ocr:1", "shadow", True)
    assert shadow.fields == primary.fields


def test_canary_share_is_close_to_its_weight_and_sticky() -> None:
    canary = StageRouting(active="2", canary=Canary(version="1", weight=0.3))
    routing = _routing(ocr=canary)
    roles = [_flow(f"r{i}").advance(routing)[0].role for i in range(2000)]
    share = roles.count("canary") / len(roles)
    assert share == pytest.approx(0.3, abs=0.04)
    assert [_flow(f"r{i}").advance(routing)[0].role for i in range(50)] == roles[:50]


def test_rollback_between_stages_applies_to_stages_not_reached_yet() -> None:
    flow = _flow()
    [ocr] = flow.advance(_routing())
    rolled_back = _routing(langid=StageRouting(active="2"))
    [langid] = _reply(flow, ocr, rolled_back, text=_b("Hi"))
    assert langid.served_by == "langid:2"
    assert flow.served_by["ocr"] == "ocr:2"


FAN_OUT_AND_JOIN = parse_spec(
    """
pipeline: fan
version: 1
inputs: {x: {datatype: BYTES, shape: [1]}}
stages:
  a: {model: m, inputs: {x: request.x}}
  b: {model: m, inputs: {x: a.y}}
  c: {model: m, inputs: {x: a.y}}
  d: {model: j, inputs: {left: b.y, right: c.y}}
outputs: {left: b.y, joined: d.y}
"""
)


def test_fan_out_dispatches_both_branches_and_the_join_waits_for_both() -> None:
    stages = {s: StageRouting(active="1") for s in "abcd"}
    routing = ControlState({"fan": PipelineRouting(pipeline="fan", stages=stages)})
    flow = RequestFlow(FAN_OUT_AND_JOIN, Envelope("r", {"x": _b("in")}), sticky_key="r")
    [a] = flow.advance(routing)
    b, c = _reply(flow, a, routing, y=_b("A"))
    assert {b.stage, c.stage} == {"b", "c"}  # both branches at once
    assert _reply(flow, b, routing, y=_b("B")) == []  # the join waits for the other branch
    [d] = _reply(flow, c, routing, y=_b("C"))
    assert (d.fields["left"].tolist(), d.fields["right"].tolist()) == ([b"B"], [b"C"])
    assert _reply(flow, d, routing, y=_b("D")) == []
    assert flow.finished
    assert flow.result().fields["joined"].tolist() == [b"D"]


def test_guard_watch_trips_on_error_rate_only_with_enough_requests_in_the_window() -> None:
    rule = GuardRule(metric="error_rate", max=0.2, window_s=10, min_requests=10)
    watch = GuardWatch()
    for i in range(9):
        watch.add("s", "2", ok=i % 2 == 0, latency_ms=1.0, now=100.0 + i)
    assert watch.crossed("s", "2", (rule,), now=109.0) is None  # 9 < min_requests
    watch.add("s", "2", ok=False, latency_ms=1.0, now=109.5)
    trip = watch.crossed("s", "2", (rule,), now=109.5)
    assert trip is not None
    assert trip.value == pytest.approx(0.5)
    assert "error_rate 0.5 > 0.2" in trip.reason
    assert watch.crossed("s", "2", (rule,), now=125.0) is None  # the window moved past them


def test_guard_watch_trips_on_p99_latency() -> None:
    rule = GuardRule(metric="p99_latency_ms", max=50, window_s=60, min_requests=5)
    watch = GuardWatch()
    for latency in (10.0, 12.0, 11.0, 9.0):
        watch.add("s", "2", ok=True, latency_ms=latency, now=1.0)
    assert watch.crossed("s", "2", (rule,), now=2.0) is None
    watch.add("s", "2", ok=True, latency_ms=900.0, now=2.0)
    trip = watch.crossed("s", "2", (rule,), now=2.0)
    assert trip is not None
    assert trip.rule.metric == "p99_latency_ms"
