"""Traces through a real OpenTelemetry Collector: `modelyard send`, the router and every stage
export OTLP to it (the standard ``OTEL_*`` variables, as an operator sets them), and what it
writes out must hold each request as one trace: `send`'s span the only root, every other span's
parent in the same trace, a span from the router and from every stage that ran.

The collector is built once by ``make setup`` (``scripts/otelcol.sh``); real models, the text
pipeline (language ID, translation when not English, sentiment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from modelyard.stack import Stack

from tests.support.otelcol import OtelCollector, Span, draw_trace, otelcol_binary
from tests.support.pipelines import TEXT_SPEC

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

__all__ = ["otelcol_binary"]  # the session fixture, imported to be found

PIPELINE = "text"
TEXTS = {  # English skips translation; German is not translated, so sentiment is skipped
    "en": "This restaurant is horrible, the food was cold and the staff was rude.",
    "es": "La habitación era muy bonita y el personal fue amable.",
    "de": "Das Zimmer war sauber und das Frühstück war ausgezeichnet.",
}


def test_every_request_is_one_trace_from_send_through_the_router_and_every_stage(
    broker: str, reference_repo: Path, otelcol_binary: Path, tmp_path: Path
) -> None:
    prefix = f"otel{int(time.time() * 1000) % 10**8}"
    spec = tmp_path / f"{PIPELINE}.yaml"
    spec.write_text(TEXT_SPEC)
    with OtelCollector(otelcol_binary, tmp_path) as collector:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: spans leave soon; shutdown flushes the rest
        }
        stack = Stack(
            pipelines=(spec,), repository=reference_repo, bootstrap=broker, topic_prefix=prefix,
            partitions=2, router_port=0, log_level="WARNING", audit_sink=False, monitor=False,
            child_env=env,
        )  # fmt: skip
        with stack:  # leaving stops the router and stages: each flushes its spans
            results = _send(stack.bootstrap, prefix, tmp_path, env)
        assert stack.failure is None
        collector.stop()  # the file exporter writes what it holds
        spans = collector.spans()
    assert [r["error"] for r in results] == [None] * len(TEXTS)
    for result in results:
        _check_request(result, spans)


def _send(bootstrap: str, prefix: str, tmp_path: Path, env: dict[str, str]) -> list[Any]:
    """`modelyard send` in a process of its own, as a user runs it; its JSON results."""
    files = []
    for lang, text in TEXTS.items():
        files.append(tmp_path / f"{lang}.txt")
        files[-1].write_text(text)
    sent = subprocess.run(
        [sys.executable, "-m", "modelyard.cli.main", "send", PIPELINE, *map(str, files),
         "--input", "text", "--json", "--timeout", "120",
         "--bootstrap", bootstrap, "--topic-prefix", prefix],
        capture_output=True, text=True, timeout=180, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    return [json.loads(line) for line in sent.stdout.splitlines()]


def _check_request(result: dict[str, Any], spans: list[Span]) -> None:
    request_id, trace_id = result["id"], result["trace_id"]
    mine = [s for s in spans if s.attributes.get("modelyard.request_id") == request_id]
    trace = [s for s in spans if s.trace_id == trace_id]
    drawn = f"request {request_id}, trace {trace_id}:\n{draw_trace(trace)}"
    assert {s.trace_id for s in mine} == {trace_id}, f"{drawn}\nits spans: {mine}"
    ids = {s.span_id for s in trace}
    roots = [s for s in trace if s.parent not in ids]  # no parent, or one never exported
    assert [(s.name, s.service, s.parent) for s in roots] == [
        (f"{PIPELINE} send", "modelyard-send", "")
    ], drawn
    by_name = {s.name: s for s in trace}
    request = by_name.get(f"{PIPELINE} request")
    assert request is not None, drawn
    assert request.service == "modelyard-router", drawn
    for stage, ref in result["served_by"].items():
        hop = by_name.get(f"{PIPELINE}/{stage} {ref}")
        work = by_name.get(f"{ref} process")
        assert hop is not None, f"no router span for {stage}\n{drawn}"
        assert hop.parent == request.span_id, drawn
        assert work is not None, f"no span of stage {stage} ({ref})\n{drawn}"
        assert work.parent == hop.span_id, drawn
        assert work.service == f"modelyard-{ref.replace(':', '-')}", drawn
    print(drawn)  # the trace, for the record (pytest -s)
