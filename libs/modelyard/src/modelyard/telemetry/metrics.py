"""Prometheus metrics for a stage and for the router, and the tiny HTTP server for /metrics and
/healthz.

Each ``MetricsHooks`` owns its metrics in a ``CollectorRegistry`` (a fresh one by default, never
the process-global registry, so tests and multi-stage processes do not collide).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from modelyard.telemetry._tally import Tally
from modelyard.telemetry.hooks import Hooks, RequestContext, RoutedHop, RoutedRequest

__all__ = [
    "HealthCheck",
    "MetricsHooks",
    "MetricsServer",
    "RouteMetricsHooks",
    "count_receive_failures",
    "start_http_server",
    "stop_http_server",
]

log = structlog.get_logger(__name__)

HealthCheck = Callable[[], dict[str, bool]]

# 0.5 ms (a tiny CPU model) ... 10 s (a deadline-bound GPU batch under load)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_MV = ("model", "version")


def count_receive_failures(registry: CollectorRegistry, failures: Callable[[], int]) -> None:
    """Export a consumer's fetch responses too large to receive (see kafka.fetch_health)."""
    Gauge(
        "modelyard_kafka_receive_failures",
        "Fetch responses the consumer could not receive since start (a record over "
        "receive.message.max.bytes); while they come, /healthz/ready is not ready.",
        registry=registry,
    ).set_function(failures)


class MetricsHooks(Hooks):
    """Counts requests by outcome, times requests and batches, tracks lag, commits and pauses."""

    def __init__(self, model: str, version: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._mv = (model, version)
        r = self.registry
        # what every request or batch records: cheap plain numbers (see _tally)
        self._tally = Tally(_MV, self._mv)
        self._requests = self._tally.counter(
            "modelyard_requests", "Requests by outcome.", ["transport", "outcome"]
        )
        self._latency = self._tally.histogram(
            "modelyard_request_latency_seconds",
            "Arrival to reply ready.",
            ["transport"],
            LATENCY_BUCKETS,
        )
        self._batch_size = self._tally.histogram(
            "modelyard_batch_size", "Requests per predict call.", [], BATCH_SIZE_BUCKETS
        )
        self._batch_seconds = self._tally.histogram(
            "modelyard_batch_seconds", "Seconds per predict call.", [], LATENCY_BUCKETS
        )
        r.register(self._tally)
        self.dead_letters = Counter("modelyard_dead_letters", "Dead letters.", _MV, registry=r)
        self.send_errors = Counter("modelyard_send_errors", "Failed produces.", _MV, registry=r)
        self.commits = Counter("modelyard_commits", "Offset commits.", _MV, registry=r)
        self.lag_gauge = Gauge(
            "modelyard_consumer_lag", "Messages behind.", ["topic", "partition"], registry=r
        )
        self.paused_gauge = Gauge("modelyard_intake_paused", "1 while paused.", _MV, registry=r)
        # labelled children cached: .labels() takes a lock and a dict lookup per call
        self._children: dict[tuple[int | str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key: tuple[int | str, ...] = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*self._mv, *labels)
        return child

    def batch_finished(
        self, batch: Sequence[RequestContext], seconds: float, error: BaseException | None
    ) -> None:
        with self._tally.lock:
            self._batch_size.observe((), len(batch))
            self._batch_seconds.observe((), seconds)

    def request_finished(self, request: RequestContext, outcome: str, seconds: float) -> None:
        with self._tally.lock:
            self._requests.inc((request.transport, outcome))
            self._latency.observe((request.transport,), seconds)

    def requests_finished(
        self, requests: Sequence[RequestContext], outcomes: Sequence[str], now: float
    ) -> None:
        requests_total, latency = self._requests, self._latency
        with self._tally.lock:  # once per batch
            for request, outcome in zip(requests, outcomes, strict=True):
                requests_total.inc((request.transport, outcome))
                latency.observe((request.transport,), now - request.received_at)

    def dead_lettered(
        self, request: RequestContext | None, topic: str, error: BaseException
    ) -> None:
        self._child(self.dead_letters).inc()

    def send_failed(self, topic: str, error: BaseException) -> None:
        self._child(self.send_errors).inc()

    def committed(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        self._child(self.commits).inc()

    def lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag_gauge.labels(topic, str(partition)).set(lag)

    def paused(self, paused: bool) -> None:
        self._child(self.paused_gauge).set(1 if paused else 0)


# -- HTTP endpoints ----------------------------------------------------------------------------
class RouteMetricsHooks(Hooks):
    """The router's metrics: requests and hops by outcome, their latency, dropped messages."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # a stage version's labels -> its latency child and its counter child per outcome
        self._hop_children: dict[tuple[str, ...], tuple[Any, dict[str, Any]]] = {}
        self._requests = Counter(
            "modelyard_router_requests", "Requests routed, by outcome.",
            ["pipeline", "outcome"], registry=registry,
        )  # fmt: skip
        self._latency = Histogram(
            "modelyard_router_request_seconds", "Ingress to result.", ["pipeline"],
            registry=registry, buckets=ROUTER_BUCKETS,
        )  # fmt: skip
        self._hops = Counter(
            "modelyard_router_hops", "Stage executions, by version, role and outcome.",
            ["pipeline", "stage", "model", "version", "role", "outcome"], registry=registry,
        )  # fmt: skip
        self._hop_latency = Histogram(
            "modelyard_router_hop_seconds", "Dispatch to reply, per stage version.",
            ["pipeline", "stage", "model", "version", "role"], registry=registry,
            buckets=ROUTER_BUCKETS,
        )  # fmt: skip
        self._dropped = Counter(
            "modelyard_router_dropped", "Messages ignored, by reason.", ["reason"],
            registry=registry,
        )  # fmt: skip

    def hop_finished(self, hop: RoutedHop, outcome: str) -> None:
        if outcome == "sent":  # a shadow copy: its outcome is the shadow auditor's to count
            return
        labels = (hop.pipeline, hop.stage, hop.model, hop.version, hop.role)
        bound = self._hop_children.get(labels)  # one lookup for both metrics of a stage version
        if bound is None:
            bound = self._hop_children[labels] = (self._hop_latency.labels(*labels), {})
        latency, counts = bound
        count = counts.get(outcome)
        if count is None:
            count = counts[outcome] = self._hops.labels(*labels, outcome)
        count.inc()
        latency.observe(time.monotonic() - hop.started)

    def route_finished(self, request: RoutedRequest, outcome: str) -> None:
        self._child(self._requests, (request.pipeline, outcome)).inc()
        self._child(self._latency, (request.pipeline,)).observe(time.monotonic() - request.started)

    def dropped(self, reason: str) -> None:
        self._child(self._dropped, (reason,)).inc()

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        # labels() costs several microseconds a call; the label sets are few
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


# 1 ms (two no-op hops) ... 30 s (the default request deadline)
ROUTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class MetricsServer(ThreadingHTTPServer):
    """The HTTP server plus the thread that runs it (joined by ``stop_http_server``)."""

    daemon_threads = True  # a stuck scrape must not hold the process open
    allow_reuse_address = True  # SO_REUSEADDR: a restart binds while old connections TIME_WAIT
    thread: threading.Thread


def _handler(registry: CollectorRegistry, health: HealthCheck) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz/live":
                self._json(HTTPStatus.OK, {"live": True})
            elif path == "/healthz/ready":
                checks = _run_checks(health)
                ready = all(checks.values())
                status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
                self._json(status, {"ready": ready, "checks": checks})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # scrapes and probes every few seconds: keep them out of the default stderr log
            log.debug("http request", client=self.client_address[0], line=format % args)

    return Handler


def _run_checks(health: HealthCheck) -> dict[str, bool]:
    try:
        return {name: bool(ok) for name, ok in health().items()}
    except Exception as exc:  # a broken check means not ready, not a crashed endpoint
        log.warning("health check raised", error=repr(exc))
        return {"health_check": False}


def start_http_server(
    host: str, port: int, registry: CollectorRegistry, health: HealthCheck
) -> tuple[MetricsServer, int]:
    """Serve /metrics, /healthz/live and /healthz/ready in a daemon thread; port 0 lets the OS
    choose. Returns the server and the port it is bound to."""
    server = MetricsServer((host, port), _handler(registry, health))
    server.thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="modelyard-http",
        daemon=True,
    )
    server.thread.start()
    return server, int(server.server_address[1])


def stop_http_server(server: MetricsServer, timeout: float = 5.0) -> None:
    """Stop serving, close the socket and join the server thread."""
    server.shutdown()
    server.server_close()
    server.thread.join(timeout)
