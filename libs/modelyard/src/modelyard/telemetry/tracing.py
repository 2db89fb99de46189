"""OpenTelemetry tracing: SDK set-up for entry points, stage and router hooks, Kafka header
propagation.

Trace context crosses Kafka (and gRPC metadata, once converted to the same ``(key, bytes)``
list) as W3C ``traceparent``/``tracestate`` headers. ``TracingHooks`` opens one span per request
(CONSUMER for Kafka, SERVER for gRPC) continuing the producer's trace, and one INTERNAL span per
batch that links to every request it carries. Only ``configure_tracing`` touches the SDK, and
only entry points call it; with no provider configured every hook returns at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from modelyard.telemetry.hooks import Carrier, Hooks, RequestContext, RoutedHop, RoutedRequest

__all__ = [
    "SPAN_KEY",
    "KafkaHeadersGetter",
    "KafkaHeadersSetter",
    "RouteTracingHooks",
    "TracingHooks",
    "configure_tracing",
    "extract",
    "inject_current",
]

log = structlog.get_logger(__name__)

SPAN_KEY = "otel.span"  # RequestContext.scratch key of the request span (LoggingHooks reads it)
_BATCH_KEY = "otel.batch_span"
_QUEUED_KEY = "otel.queued"
_PROPAGATOR = TraceContextTextMapPropagator()


class KafkaHeadersGetter(Getter[Sequence[tuple[str, bytes | None]]]):
    """Reads Kafka headers: names case-insensitive, last value wins (a re-sent message may carry
    the original header and a newer one appended after it)."""

    def get(self, carrier: Sequence[tuple[str, bytes | None]], key: str) -> list[str] | None:
        wanted, found = key.lower(), None
        for name, value in carrier:
            if name.lower() == wanted and value is not None:
                found = value
        return None if found is None else [found.decode("utf-8", "replace")]

    def keys(self, carrier: Sequence[tuple[str, bytes | None]]) -> list[str]:
        return [name for name, _ in carrier]


class KafkaHeadersSetter(Setter[Carrier]):
    """Writes Kafka headers, replacing any header of the same name (case-insensitive) so a
    forwarded message never carries two contradicting ``traceparent`` values."""

    def set(self, carrier: Carrier, key: str, value: str) -> None:
        wanted = key.lower()
        carrier[:] = [(name, v) for name, v in carrier if name.lower() != wanted]
        carrier.append((key, value.encode()))


GETTER = KafkaHeadersGetter()
SETTER = KafkaHeadersSetter()


def extract(carrier: Sequence[tuple[str, bytes | None]]) -> otel_context.Context:
    """The remote trace context carried in Kafka headers (an empty context when none)."""
    return _PROPAGATOR.extract(carrier, getter=GETTER)


def inject_current(carrier: Carrier, ctx: otel_context.Context | None = None) -> Carrier:
    """Write the current (or given) trace context into ``carrier``; returns it for chaining."""
    _PROPAGATOR.inject(carrier, context=ctx, setter=SETTER)
    return carrier


def configure_tracing(
    service_name: str, *, exporter: SpanExporter | None = None, set_global: bool = True
) -> TracerProvider | None:
    """Install an SDK tracer provider chosen by the standard ``OTEL_*`` variables.

    ``OTEL_SDK_DISABLED=true`` wins; an explicit ``exporter`` (tests) is used synchronously;
    otherwise ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``; comma-separated) or an
    OTLP endpoint variable decide. With nothing chosen tracing stays off and None is returned.
    The sampler follows ``OTEL_TRACES_SAMPLER`` (the SDK default). Shut the returned provider
    down at exit to flush. ``set_global=False`` leaves the process-wide provider alone.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    processors = [SimpleSpanProcessor(exporter)] if exporter is not None else _processors_from_env()
    if not processors:
        return None
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name  # the operator's name wins
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    for processor in processors:
        provider.add_span_processor(processor)
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def chosen_exporters(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Exporter names the environment asks for; OTLP is implied by an endpoint variable."""
    if raw := environ.get("OTEL_TRACES_EXPORTER", "").strip().lower():
        return tuple(n.strip() for n in raw.split(",") if n.strip() not in ("", "none"))
    endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return ("otlp",) if any(environ.get(k) for k in endpoint) else ()


def _processors_from_env() -> list[SpanProcessor]:
    processors: list[SpanProcessor] = []
    for name in chosen_exporters(os.environ):
        if name == "otlp":
            # imported here: it pulls in grpc and protobuf, needless when tracing is off
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER entry ignored", exporter=name)
    return processors


def _enabled(provider: trace.TracerProvider) -> bool:
    # the API's stand-ins mean no SDK was configured: stay off at near-zero cost
    return not isinstance(provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider)


class TracingHooks(Hooks):
    """A span per request continuing the producer's trace, and a span per batch linking them."""

    def __init__(
        self,
        model: str,
        version: str,
        topic: str | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        provider = tracer_provider or trace.get_tracer_provider()
        self.enabled = _enabled(provider)  # decided once: the hot path only reads a bool
        self._tracer = trace.get_tracer("modelyard.stage", tracer_provider=provider)
        self._name = f"{model}:{version}"
        self._topic = topic
        self._common = {"modelyard.model": model, "modelyard.version": version}

    def request_received(self, request: RequestContext) -> None:
        """Start the request span, parented on the trace context in its headers."""
        if not self.enabled:
            return
        kafka = request.transport == "kafka"
        request.scratch[SPAN_KEY] = self._tracer.start_span(
            f"{self._name} process",
            context=extract(request.carrier),
            kind=SpanKind.CONSUMER if kafka else SpanKind.SERVER,
            attributes=self._request_attributes(request),
        )

    def batch_started(self, batch: Sequence[RequestContext]) -> None:
        """Start the batch span (a root linked to each request) and record queue waits."""
        if not self.enabled or not batch:
            return
        now, links = time.monotonic(), []
        for request in batch:
            span = request.scratch.get(SPAN_KEY)
            if span is None:
                continue
            links.append(Link(span.get_span_context()))
            if not request.scratch.get(_QUEUED_KEY):  # a retried request waited only once
                request.scratch[_QUEUED_KEY] = True
                span.set_attribute("modelyard.queue_wait_ms", (now - request.received_at) * 1e3)
        batch[0].scratch[_BATCH_KEY] = self._tracer.start_span(
            f"{self._name} batch",
            context=otel_context.Context(),  # a batch belongs to no single request's trace
            kind=SpanKind.INTERNAL,
            links=links,
            attributes={**self._common, "modelyard.batch_size": len(batch)},
        )

    def batch_finished(
        self, batch: Sequence[RequestContext], seconds: float, error: BaseException | None
    ) -> None:
        """End the batch span, recording the exception the model raised, if any."""
        if not self.enabled or not batch:
            return
        span = batch[0].scratch.pop(_BATCH_KEY, None)
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    def request_finished(self, request: RequestContext, outcome: str, seconds: float) -> None:
        """Mark the outcome and end the request span (its context stays usable for inject)."""
        span = request.scratch.get(SPAN_KEY) if self.enabled else None
        if span is None or not span.is_recording():
            return
        span.set_attribute("modelyard.outcome", outcome)
        if outcome != "ok":
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()

    def inject(self, request: RequestContext, carrier: Carrier) -> None:
        """Write the request span's context so the reply continues the request's trace."""
        span = request.scratch.get(SPAN_KEY) if self.enabled else None
        if span is not None:
            inject_current(carrier, trace.set_span_in_context(span))

    def _request_attributes(self, request: RequestContext) -> dict[str, str | bool | int]:
        attributes: dict[str, str | bool | int] = {
            **self._common,
            "modelyard.request_id": request.request_id,
            "modelyard.shadow": request.shadow,
            "modelyard.attempt": request.attempt,
        }
        if request.transport == "kafka":
            attributes["messaging.system"] = "kafka"
            attributes["messaging.operation"] = "process"
            attributes["messaging.message.id"] = request.request_id
            if self._topic:
                attributes["messaging.destination.name"] = self._topic
        else:
            attributes["rpc.system"] = "grpc"
        if request.pipeline:  # OTel rejects None attribute values
            attributes["modelyard.pipeline"] = request.pipeline
        if request.caller:
            attributes["modelyard.caller"] = request.caller
        return attributes


class RouteTracingHooks(Hooks):
    """The router's spans: one per request continuing the producer's trace, a child per hop
    whose context travels to the stage in the dispatch headers (so the stage's span nests under
    it), and shadow hops in traces of their own, linked to the request's span."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        provider = tracer_provider or trace.get_tracer_provider()
        self.enabled = _enabled(provider)
        self._tracer = trace.get_tracer("modelyard.router", tracer_provider=provider)

    def route_started(self, request: RoutedRequest) -> None:
        span = self._tracer.start_span(
            f"{request.pipeline} request",
            context=extract(request.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "modelyard.pipeline": request.pipeline,
                "modelyard.request_id": request.request_id,
                "modelyard.caller": request.caller or "",
                "messaging.system": "kafka",
                "messaging.operation": "process",
            },
        )
        request.scratch[SPAN_KEY] = span
        request.trace_id = f"{span.get_span_context().trace_id:032x}"

    def hop_started(self, request: RoutedRequest | None, hop: RoutedHop, carrier: Carrier) -> None:
        parent = request.scratch.get(SPAN_KEY) if request is not None else None
        if hop.shadow:  # its own trace, linked: shadow work never shows as part of the request
            context = otel_context.Context()
            links = [Link(parent.get_span_context())] if parent else []
        else:
            context = trace.set_span_in_context(parent) if parent else otel_context.Context()
            links = []
        suffix = " shadow" if hop.shadow else ""
        span = self._tracer.start_span(
            f"{hop.pipeline}/{hop.stage} {hop.model}:{hop.version}{suffix}",
            context=context,
            kind=SpanKind.PRODUCER,
            links=links,
            attributes={
                "modelyard.pipeline": hop.pipeline,
                "modelyard.stage": hop.stage,
                "modelyard.model": hop.model,
                "modelyard.version": hop.version,
                "modelyard.role": hop.role,
                "modelyard.shadow": hop.shadow,
                "modelyard.request_id": hop.request_id,
            },
        )
        hop.scratch[SPAN_KEY] = span
        hop.scratch["span_id"] = f"{span.get_span_context().span_id:016x}"
        inject_current(carrier, trace.set_span_in_context(span))

    def hop_finished(self, hop: RoutedHop, outcome: str) -> None:
        span = hop.scratch.pop(SPAN_KEY, None)
        if span is not None:
            _end_with(span, outcome)

    def route_finished(self, request: RoutedRequest, outcome: str) -> None:
        span = request.scratch.pop(SPAN_KEY, None)
        if span is not None:
            served = ", ".join(f"{s}={v}" for s, v in sorted(request.served_by.items()))
            span.set_attribute("modelyard.served_by", served)
            _end_with(span, outcome)


def _end_with(span: trace.Span, outcome: str) -> None:
    span.set_attribute("modelyard.outcome", outcome)
    if outcome != "ok":
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()
