"""The router's spans: one trace per request, a child span per hop whose context the stage gets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Message
from modelyard.broker import ensure_pipeline_topics
from modelyard.control import Shadow, StageRouting
from modelyard.graph import parse_spec
from modelyard.repository.build import BuildContext
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.telemetry import HookChain, RouteTracingHooks
from modelyard.telemetry.tracing import inject_current
from modelyard.topics import model_input_topic, pipeline_ingress_topic, pipeline_results_topic
from modelyard.wire import Envelope, encode_envelope
from modelyard.wire.headers import header_value
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, set_span_in_context

from tests.support.kafka_io import Collector, produce_all
from tests.support.models import write_shout_version
from tests.support.routing import StaticRouting
from tests.support.stage import StageProcess

pytestmark = pytest.mark.integration

SPEC = parse_spec(
    """
pipeline: tp
version: 1
inputs: {text: {datatype: BYTES, shape: [-1]}}
stages:
  first: {model: shout, inputs: {text: request.text}}
  second: {model: shout, inputs: {text: first.shout}}
outputs: {loud: second.shout}
"""
)


Traced = tuple[str, str, InMemorySpanExporter, TracerProvider]  # bootstrap, prefix, spans, SDK


@pytest.fixture
def traced(
    broker: str, tmp_path: Path
) -> Iterator[tuple[str, str, InMemorySpanExporter, TracerProvider]]:
    ctx = BuildContext(root=tmp_path, cache=tmp_path / ".cache")
    write_shout_version(ctx, "1")
    write_shout_version(ctx, "2")
    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    ensure_pipeline_topics(broker, prefix, "tp", 2)
    args = ("--bootstrap", broker, "--topic-prefix", prefix, "--no-grpc")
    stages = [StageProcess(f"shout:{v}", tmp_path, *args) for v in ("1", "2")]
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    routing = StaticRouting(
        "tp", first=StageRouting(active="1"),
        second=StageRouting(active="1", shadow=Shadow(version="2", sample_rate=1.0)),
    )  # fmt: skip
    hooks = HookChain([RouteTracingHooks(tracer_provider=provider)])
    router = PipelineRouter(SPEC, routing, RouterOptions(bootstrap=broker, prefix=prefix), hooks)
    try:
        for stage in stages:
            stage.wait_ready(60)
        router.start()
        assert router.wait_joined(60)
        yield broker, prefix, exporter, provider
    finally:
        router.stop()
        for stage in stages:
            stage.terminate()


def test_one_trace_per_request_with_a_span_per_hop_and_shadow_in_its_own_linked_trace(
    traced: Traced,
) -> None:
    broker, prefix, exporter, provider = traced
    client = provider.get_tracer("test").start_span("client send", kind=SpanKind.PRODUCER)
    headers = inject_current([], set_span_in_context(client))
    value = encode_envelope(Envelope("tr-1", {"text": ["hi"]}))
    produce_all(broker, pipeline_ingress_topic(prefix, "tp"), [("tr-1", value, headers)])
    collector = Collector(broker, pipeline_results_topic(prefix, "tp"), 2)
    try:
        collector.until(lambda ms: any(m.key() == b"tr-1" for m in ms), 60)
    finally:
        collector.close()
    client.end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    request = spans["tp request"]
    trace_id = client.get_span_context().trace_id
    assert request.context.trace_id == trace_id  # the producer's trace continues
    assert request.parent is not None
    assert request.parent.span_id == client.get_span_context().span_id
    for stage in ("first", "second"):
        hop = spans[f"tp/{stage} shout:1"]
        assert hop.context.trace_id == trace_id
        assert hop.parent is not None
        assert hop.parent.span_id == request.context.span_id
        assert hop.attributes is not None
        assert (hop.attributes["modelyard.stage"], hop.attributes["modelyard.version"]) == (
            stage,
            "1",
        )
    shadow = spans["tp/second shout:2 shadow"]
    assert shadow.context.trace_id != trace_id  # its own trace ...
    assert [link.context.span_id for link in shadow.links] == [request.context.span_id]  # linked
    assert request.attributes is not None
    assert request.attributes["modelyard.outcome"] == "ok"
    # the stage receives the hop span's context: its own span nests under the hop
    dispatches = Collector(broker, model_input_topic(prefix, "shout", "1"), 4)
    try:
        sent = dispatches.until(lambda ms: sum(m.key() == b"tr-1" for m in ms) >= 2, 60)
    finally:
        dispatches.close()
    parents = {_parent(m) for m in sent if m.key() == b"tr-1"}
    hops = [spans[f"tp/{s} shout:1"].context for s in ("first", "second")]
    assert parents == {(c.trace_id, c.span_id) for c in hops}


def _parent(message: Message) -> tuple[int, int]:
    _, trace, span, _ = (header_value(message.headers(), "traceparent") or "").split("-")
    return int(trace, 16), int(span, 16)
