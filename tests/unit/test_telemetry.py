"""Telemetry hooks: spans through the SDK's in-memory exporter, metrics, logs, configuration."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from modelyard.telemetry import (
    HookChain,
    Hooks,
    LoggingHooks,
    MetricsHooks,
    RequestContext,
    TracingHooks,
    configure_logging,
    configure_tracing,
    extract,
    inject_current,
)
from modelyard.telemetry.tracing import KafkaHeadersGetter, KafkaHeadersSetter, chosen_exporters
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_SPAN_ID:016x}-01"
OTEL_VARS = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()  # never the global one: it can be set once per process
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def hooks(provider: TracerProvider) -> TracingHooks:
    return TracingHooks("ocr", "3", "my.topic", tracer_provider=provider)


@pytest.fixture
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


def kafka_request(rid: str = "r1", *, parent: bool = True) -> RequestContext:
    carrier = [("reply-to", b"replies")]
    if parent:
        carrier.append(("TraceParent", TRACEPARENT.encode()))
    return RequestContext(rid, "kafka", carrier, pipeline="docs", attempt=1)


def spans_named(exporter: InMemorySpanExporter, suffix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.endswith(suffix)]


def run_one(hooks: Hooks, request: RequestContext, outcome: str = "ok") -> None:
    hooks.request_received(request)
    hooks.batch_started([request])
    hooks.batch_finished([request], 0.001, None)
    hooks.request_finished(request, outcome, 0.002)


# -- tracing -----------------------------------------------------------------------------------
def test_kafka_request_span_continues_the_producer_trace(
    hooks: TracingHooks, exporter: InMemorySpanExporter
) -> None:
    run_one(hooks, kafka_request())
    (span,) = spans_named(exporter, "process")
    assert span.name == "ocr:3 process"
    assert span.kind is SpanKind.CONSUMER
    assert span.context is not None
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None
    assert span.parent.span_id == PARENT_SPAN_ID
    attrs = dict(span.attributes or {})
    assert attrs["messaging.system"] == "kafka"
    assert attrs["messaging.destination.name"] == "my.topic"
    assert attrs["messaging.operation"] == "process"
    assert attrs["messaging.message.id"] == attrs["modelyard.request_id"] == "r1"
    assert attrs["modelyard.pipeline"] == "docs"
    assert attrs["modelyard.attempt"] == 1
    assert attrs["modelyard.shadow"] is False
    assert attrs["modelyard.outcome"] == "ok"
    assert float(str(attrs["modelyard.queue_wait_ms"])) >= 0
    assert span.status.status_code is StatusCode.UNSET


def test_grpc_request_is_a_server_span_without_messaging_attributes(
    hooks: TracingHooks, exporter: InMemorySpanExporter
) -> None:
    run_one(hooks, RequestContext("g1", "grpc"))
    (span,) = spans_named(exporter, "process")
    assert span.kind is SpanKind.SERVER
    assert span.parent is None
    assert "messaging.system" not in (span.attributes or {})


def test_batch_span_links_to_each_request_span(
    hooks: TracingHooks, exporter: InMemorySpanExporter
) -> None:
    batch = [kafka_request("a"), kafka_request("b", parent=False), kafka_request("c")]
    for request in batch:
        hooks.request_received(request)
    hooks.batch_started(batch)
    hooks.batch_finished(batch, 0.01, None)
    for request in batch:
        hooks.request_finished(request, "ok", 0.02)
    (batch_span,) = spans_named(exporter, "batch")
    assert batch_span.kind is SpanKind.INTERNAL
    assert (batch_span.attributes or {})["modelyard.batch_size"] == 3
    linked = {link.context.span_id for link in batch_span.links}
    requests = {s.context.span_id for s in spans_named(exporter, "process") if s.context}
    assert linked == requests
    assert len(requests) == 3


def test_failed_batch_and_request_record_errors(
    hooks: TracingHooks, exporter: InMemorySpanExporter
) -> None:
    request = kafka_request()
    hooks.request_received(request)
    hooks.batch_started([request])
    hooks.batch_finished([request], 0.01, RuntimeError("boom"))
    hooks.request_finished(request, "model", 0.02)
    (batch_span,) = spans_named(exporter, "batch")
    assert batch_span.status.status_code is StatusCode.ERROR
    assert [e.name for e in batch_span.events] == ["exception"]
    (span,) = spans_named(exporter, "process")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "model"


def test_inject_writes_the_request_span_context(
    hooks: TracingHooks, exporter: InMemorySpanExporter
) -> None:
    request = kafka_request()
    hooks.request_received(request)
    headers = [*request.carrier]  # a DLQ record copies the incoming headers, traceparent too
    hooks.inject(request, headers)
    hooks.request_finished(request, "ok", 0.001)
    (span,) = spans_named(exporter, "process")
    assert span.context is not None
    values = [v for k, v in headers if k.lower() == "traceparent"]
    assert values == [f"00-{TRACE_ID:032x}-{span.context.span_id:016x}-01".encode()]


def test_request_finished_twice_ends_the_span_once(
    hooks: TracingHooks, exporter: InMemorySpanExporter
) -> None:
    request = kafka_request()
    hooks.request_received(request)
    hooks.request_finished(request, "ok", 0.001)
    hooks.request_finished(request, "ok", 0.001)
    assert len(spans_named(exporter, "process")) == 1


class Explodes:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"disabled tracing touched the tracer ({name})")


@pytest.mark.parametrize("tracer_provider", [None, trace.NoOpTracerProvider()])
def test_disabled_tracing_does_nothing_and_raises_nothing(
    tracer_provider: trace.TracerProvider | None,
) -> None:
    hooks = TracingHooks("m", "1", tracer_provider=tracer_provider)  # None: the unset global
    assert not hooks.enabled
    hooks._tracer = Explodes()  # type: ignore[assignment]
    request = kafka_request()
    run_one(hooks, request, "model")
    headers: list[tuple[str, bytes]] = []
    hooks.inject(request, headers)
    assert headers == []
    assert request.scratch == {}


def test_getter_is_case_insensitive_and_last_value_wins() -> None:
    carrier = [("TRACEPARENT", b"first"), ("x", None), ("traceparent", b"second")]
    getter = KafkaHeadersGetter()
    assert getter.get(carrier, "traceparent") == ["second"]
    assert getter.get(carrier, "x") is None
    assert getter.get(carrier, "missing") is None
    assert getter.keys(carrier) == ["TRACEPARENT", "x", "traceparent"]


def test_setter_replaces_a_header_of_the_same_name() -> None:
    carrier = [("TraceParent", b"old"), ("reply-to", b"r")]
    KafkaHeadersSetter().set(carrier, "traceparent", "new")
    assert carrier == [("reply-to", b"r"), ("traceparent", b"new")]


def test_inject_current_and_extract_round_trip(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("produce") as span:
        headers = inject_current([])
    remote = trace.get_current_span(extract(headers)).get_span_context()
    assert remote.trace_id == span.get_span_context().trace_id
    assert remote.span_id == span.get_span_context().span_id
    assert remote.is_remote
    assert inject_current([]) == []  # no current span: nothing to propagate


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "Console, otlp"}, ("console", "otlp")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4317"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, ("otlp",)),
    ],
)
def test_exporter_choice_follows_the_otel_variables(
    env: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert chosen_exporters(env) == expected


@pytest.mark.usefixtures("clean_otel_env")
def test_configure_tracing_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configure_tracing("svc", set_global=False) is None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert configure_tracing("svc", exporter=InMemorySpanExporter(), set_global=False) is None


@pytest.mark.usefixtures("clean_otel_env")
def test_configure_tracing_with_an_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    exporter = InMemorySpanExporter()
    provider = configure_tracing("svc", exporter=exporter, set_global=False)
    assert provider is not None
    try:
        run_one(TracingHooks("m", "1", tracer_provider=provider), kafka_request())
        spans = exporter.get_finished_spans()
        assert len(spans) == 2
        assert spans[0].resource.attributes["service.name"] == "from-env"
    finally:
        provider.shutdown()


@pytest.mark.usefixtures("clean_otel_env")
def test_configure_tracing_builds_an_otlp_pipeline_from_the_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # never contacted
    provider = configure_tracing("svc", set_global=False)
    assert provider is not None
    provider.shutdown()  # nothing was recorded, so nothing is sent; joins the batch thread


# -- metrics -----------------------------------------------------------------------------------
def test_metrics_count_outcomes_and_observe_histograms() -> None:
    registry = CollectorRegistry()
    hooks = MetricsHooks("ocr", "3", registry)
    ok, bad = kafka_request("a"), RequestContext("b", "grpc")
    hooks.batch_finished([ok, bad], 0.004, None)
    hooks.request_finished(ok, "ok", 0.003)
    hooks.request_finished(ok, "ok", 0.005)
    hooks.request_finished(bad, "validation", 0.001)
    hooks.dead_lettered(bad, "dlq", ValueError("x"))
    hooks.send_failed("replies", RuntimeError("x"))
    hooks.committed([("t", 0, 5)])
    hooks.lag("t", 0, 42)
    hooks.paused(True)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    mv = {"model": "ocr", "version": "3"}
    assert value("modelyard_requests_total", **mv, transport="kafka", outcome="ok") == 2
    assert value("modelyard_requests_total", **mv, transport="grpc", outcome="validation") == 1
    assert value("modelyard_request_latency_seconds_count", **mv, transport="kafka") == 2
    latency = "modelyard_request_latency_seconds_bucket"
    assert value(latency, **mv, transport="kafka", le="0.0025") == 0
    assert value(latency, **mv, transport="kafka", le="0.005") == 2  # a bound is inclusive
    assert value(latency, **mv, transport="kafka", le="+Inf") == 2
    assert value("modelyard_request_latency_seconds_sum", **mv, transport="kafka") == pytest.approx(
        0.008
    )
    assert value("modelyard_batch_size_bucket", **mv, le="2.0") == 1
    assert value("modelyard_batch_size_sum", **mv) == 2
    assert value("modelyard_batch_seconds_count", **mv) == 1
    assert value("modelyard_dead_letters_total", **mv) == 1
    assert value("modelyard_send_errors_total", **mv) == 1
    assert value("modelyard_commits_total", **mv) == 1
    assert value("modelyard_consumer_lag", topic="t", partition="0") == 42
    assert value("modelyard_intake_paused", **mv) == 1


def test_each_metrics_hooks_gets_its_own_registry() -> None:
    first, second = MetricsHooks("m", "1"), MetricsHooks("m", "1")  # no duplicate-metric error
    assert first.registry is not second.registry


# -- logging -----------------------------------------------------------------------------------
def test_logging_hooks_summary_line_levels(
    hooks: TracingHooks, exporter: InMemorySpanExporter
) -> None:
    chain = HookChain([hooks, LoggingHooks("ocr", "3")])
    ok, bad = kafka_request("a"), RequestContext("b", "grpc")
    with capture_logs() as logs:
        run_one(chain, ok)
        chain.request_finished(bad, "validation", 0.0015)
    assert [(e["log_level"], e["request_id"], e["outcome"]) for e in logs] == [
        ("debug", "a", "ok"),
        ("warning", "b", "validation"),
    ]
    assert logs[0]["trace_id"] == f"{TRACE_ID:032x}"
    assert logs[1]["trace_id"] is None
    assert logs[1]["latency_ms"] == 1.5
    assert logs[1]["model"] == "ocr"
    assert logs[1]["transport"] == "grpc"


def test_logging_hooks_dead_letters_and_pauses() -> None:
    hooks = LoggingHooks()
    with capture_logs() as logs:
        hooks.dead_lettered(kafka_request("a"), "dlq.topic", ValueError("bad input"))
        hooks.paused(True)
        hooks.paused(False)
    assert [(e["log_level"], e["event"]) for e in logs] == [
        ("warning", "dead lettered"),
        ("info", "intake paused"),
        ("info", "intake resumed"),
    ]
    assert logs[0]["error"] == "bad input"
    assert logs[0]["topic"] == "dlq.topic"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_renders_json_for_structlog_and_stdlib(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json=True, level="INFO")
    structlog.contextvars.bind_contextvars(request_id="r9")
    try:
        structlog.get_logger("t").info("hello", n=1)
        structlog.get_logger("t").debug("hidden")
        logging.getLogger("librdkafka").warning("broker down %s", "b1")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [
        ("hello", "info"),
        ("broker down b1", "warning"),
    ]
    assert lines[0]["request_id"] == lines[1]["request_id"] == "r9"
    assert lines[0]["timestamp"].endswith("Z")
    assert lines[1]["logger"] == "librdkafka"


def test_chain_calls_only_overriding_hooks_and_survives_a_failing_one() -> None:
    seen: list[str] = []

    class Broken(Hooks):
        def request_finished(self, request: RequestContext, outcome: str, seconds: float) -> None:
            raise RuntimeError("exporter down")

    class Recorder(Hooks):
        def request_finished(self, request: RequestContext, outcome: str, seconds: float) -> None:
            seen.append(outcome)

    chain = HookChain([Broken(), Recorder()])
    request = RequestContext("r", "kafka")
    chain.request_finished(request, "ok", 0.1)
    chain.request_received(request)  # nobody observes it: a no-op
    assert seen == ["ok"]


def test_batched_finish_reaches_hooks_that_observe_one_request_at_a_time() -> None:
    seen: list[tuple[str, str, float]] = []

    class OneAtATime(Hooks):
        def request_finished(self, request: RequestContext, outcome: str, seconds: float) -> None:
            seen.append((request.request_id, outcome, round(seconds, 3)))

    registry = CollectorRegistry()
    chain = HookChain([OneAtATime(), MetricsHooks("ocr", "3", registry)])
    a = RequestContext("a", "kafka", received_at=10.0)
    b = RequestContext("b", "kafka", received_at=10.5)
    chain.requests_finished([a, b], ["ok", "model"], 11.0)
    assert seen == [("a", "ok", 1.0), ("b", "model", 0.5)]  # latency from each one's arrival
    mv = {"model": "ocr", "version": "3", "transport": "kafka"}
    assert registry.get_sample_value("modelyard_requests_total", {**mv, "outcome": "ok"}) == 1
    assert registry.get_sample_value("modelyard_requests_total", {**mv, "outcome": "model"}) == 1
    latency_sum = registry.get_sample_value("modelyard_request_latency_seconds_sum", mv)
    assert latency_sum == 1.5
