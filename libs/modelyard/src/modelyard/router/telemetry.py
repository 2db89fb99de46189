"""The router's observability seam: hooks for requests and hops, with tracing, metrics, logs.

The router service calls :class:`RouterHooks`; :class:`RouterHookChain` fans out and swallows a
failing hook, so telemetry never breaks routing. Tracing: one span per request continuing the
producer's trace, a child span per hop whose context travels to the stage in the dispatch
headers (so the stage's span nests under it), and shadow hops in traces of their own, linked to
the request's span.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram

from modelyard.router.live import Hop, LiveRequest
from modelyard.telemetry.hooks import Carrier, fan_out_hooks
from modelyard.telemetry.tracing import extract, inject_current

__all__ = [
    "RouterHookChain",
    "RouterHooks",
    "RouterLogging",
    "RouterMetrics",
    "RouterTracing",
]

log = structlog.get_logger("modelyard.router")
_SPAN = "otel.span"


class RouterHooks:
    """Every hook is a no-op; override what you observe."""

    def request_received(self, live: LiveRequest) -> None: ...

    def hop_started(self, live: LiveRequest | None, hop: Hop, carrier: Carrier) -> None:
        """A dispatch is about to be produced; ``carrier`` are its headers (inject here)."""

    def hop_finished(self, hop: Hop, outcome: str) -> None: ...

    def request_finished(self, live: LiveRequest, outcome: str) -> None: ...

    def dropped(self, reason: str) -> None:
        """A message was ignored: a duplicate reply, a late reply, a redelivered request."""


class RouterHookChain(RouterHooks):
    """Fans each call out to the hooks that override it (and are enabled): a chain of mostly
    no-op hooks costs next to nothing per message; a hook that raises never stops routing."""

    def __init__(self, hooks: Sequence[RouterHooks]) -> None:
        self.hooks = tuple(hooks)
        fan_out_hooks(self, self.hooks, RouterHooks)


class RouterTracing(RouterHooks):
    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        provider = tracer_provider or trace.get_tracer_provider()
        self.enabled = not isinstance(
            provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider
        )
        self._tracer = trace.get_tracer("modelyard.router", tracer_provider=provider)

    def request_received(self, live: LiveRequest) -> None:
        if not self.enabled:
            return
        pipeline = live.flow.spec.pipeline
        span = self._tracer.start_span(
            f"{pipeline} request",
            context=extract(live.incoming.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "modelyard.pipeline": pipeline,
                "modelyard.request_id": live.request_id,
                "modelyard.caller": live.flow.request.caller or "",
                "messaging.system": "kafka",
                "messaging.operation": "process",
            },
        )
        live.scratch[_SPAN] = span
        live.trace_id = f"{span.get_span_context().trace_id:032x}"

    def hop_started(self, live: LiveRequest | None, hop: Hop, carrier: Carrier) -> None:
        if not self.enabled:
            return
        parent = live.scratch.get(_SPAN) if live is not None else None
        d = hop.dispatch
        attributes: dict[str, str | bool] = {
            "modelyard.pipeline": hop.pipeline,
            "modelyard.stage": d.stage,
            "modelyard.model": d.model,
            "modelyard.version": d.version,
            "modelyard.role": d.role,
            "modelyard.shadow": d.shadow,
            "modelyard.request_id": hop.request_id,
        }
        if d.shadow:  # its own trace, linked: shadow work never shows as part of the request
            context, links = (
                otel_context.Context(),
                [Link(parent.get_span_context())] if parent else [],
            )
        else:
            context = trace.set_span_in_context(parent) if parent else otel_context.Context()
            links = []
        span = self._tracer.start_span(
            f"{hop.pipeline}/{d.stage} {d.served_by}{' shadow' if d.shadow else ''}",
            context=context,
            kind=SpanKind.PRODUCER,
            links=links,
            attributes=attributes,
        )
        hop.scratch[_SPAN] = span
        hop.scratch["span_id"] = f"{span.get_span_context().span_id:016x}"
        inject_current(carrier, trace.set_span_in_context(span))

    def hop_finished(self, hop: Hop, outcome: str) -> None:
        span = hop.scratch.pop(_SPAN, None)
        if span is not None:
            _end(span, outcome)

    def request_finished(self, live: LiveRequest, outcome: str) -> None:
        span = live.scratch.pop(_SPAN, None)
        if span is not None:
            served = ", ".join(f"{s}={v}" for s, v in sorted(live.flow.served_by.items()))
            span.set_attribute("modelyard.served_by", served)
            _end(span, outcome)


def _end(span: trace.Span, outcome: str) -> None:
    span.set_attribute("modelyard.outcome", outcome)
    if outcome != "ok":
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()


class RouterMetrics(RouterHooks):
    """Prometheus: requests and hops by outcome, their latency, and dropped messages."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._requests = Counter(
            "modelyard_router_requests", "Requests routed, by outcome.",
            ["pipeline", "outcome"], registry=registry,
        )  # fmt: skip
        self._latency = Histogram(
            "modelyard_router_request_seconds", "Ingress to result.", ["pipeline"],
            registry=registry, buckets=_BUCKETS,
        )  # fmt: skip
        self._hops = Counter(
            "modelyard_router_hops", "Stage executions, by version, role and outcome.",
            ["pipeline", "stage", "model", "version", "role", "outcome"], registry=registry,
        )  # fmt: skip
        self._hop_latency = Histogram(
            "modelyard_router_hop_seconds", "Dispatch to reply, per stage version.",
            ["pipeline", "stage", "model", "version", "role"], registry=registry, buckets=_BUCKETS,
        )  # fmt: skip
        self._dropped = Counter(
            "modelyard_router_dropped", "Messages ignored, by reason.", ["reason"],
            registry=registry,
        )  # fmt: skip

    def hop_finished(self, hop: Hop, outcome: str) -> None:
        if outcome == "sent":  # a shadow copy: its outcome is the shadow auditor's to count
            return
        d = hop.dispatch
        labels = (hop.pipeline, d.stage, d.model, d.version, d.role)
        self._child(self._hops, (*labels, outcome)).inc()
        self._child(self._hop_latency, labels).observe(time.monotonic() - hop.started)

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        # labels() costs several microseconds a call; the label sets are few
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_finished(self, live: LiveRequest, outcome: str) -> None:
        pipeline = live.flow.spec.pipeline
        self._child(self._requests, (pipeline, outcome)).inc()
        self._child(self._latency, (pipeline,)).observe(time.monotonic() - live.started)

    def dropped(self, reason: str) -> None:
        self._dropped.labels(reason).inc()


_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RouterLogging(RouterHooks):
    """One summary line per request: failures at warning level, the rest at debug."""

    def __init__(self) -> None:
        # decided once: at thousands of requests a second, building a dropped event costs
        self._debug = bool(log.is_enabled_for(logging.DEBUG))

    def request_finished(self, live: LiveRequest, outcome: str) -> None:
        flow = live.flow
        if flow.error is None and not self._debug:
            return
        fields = {
            "request_id": live.request_id,
            "trace_id": live.trace_id,
            "outcome": outcome,
            "ms": round((time.monotonic() - live.started) * 1000, 2),
            "served_by": flow.served_by,
        }
        if flow.error is not None:
            log.warning(
                "request failed", error=flow.error.message, stage=flow.error.stage, **fields
            )
        else:
            log.debug("request routed", **fields)

    def dropped(self, reason: str) -> None:
        if self._debug:
            log.debug("message dropped", reason=reason)
