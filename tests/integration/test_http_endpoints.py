"""The stage's HTTP endpoints (/metrics, /healthz/*) over real loopback HTTP."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from modelyard.telemetry import MetricsHooks, RequestContext, start_http_server, stop_http_server
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], err.read()


@pytest.fixture
def checks() -> dict[str, bool]:
    return {"model": True, "kafka": True}


@pytest.fixture
def port(checks: dict[str, bool]) -> Iterator[int]:
    registry = CollectorRegistry()
    hooks = MetricsHooks("ocr", "3", registry)
    hooks.request_finished(RequestContext("r", "kafka"), "ok", 0.01)
    server, bound = start_http_server("127.0.0.1", 0, registry, lambda: dict(checks))
    yield bound
    stop_http_server(server)
    assert not any(t.name == "modelyard-http" for t in threading.enumerate())


def test_metrics_are_served_in_prometheus_text(port: int) -> None:
    status, content_type, body = get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert (
        b'modelyard_requests_total{model="ocr",outcome="ok",transport="kafka",version="3"} 1.0'
        in body
    )


def test_liveness_and_readiness(port: int, checks: dict[str, bool]) -> None:
    assert get(port, "/healthz/live")[0] == 200
    status, content_type, body = get(port, "/healthz/ready")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"ready": True, "checks": {"model": True, "kafka": True}}
    checks["kafka"] = False
    status, _, body = get(port, "/healthz/ready")
    assert status == 503
    assert json.loads(body)["checks"] == {"model": True, "kafka": False}


def test_a_raising_health_check_means_not_ready() -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("no model")

    server, port = start_http_server("127.0.0.1", 0, CollectorRegistry(), broken)
    try:
        assert get(port, "/healthz/ready")[0] == 503
        assert get(port, "/nope")[0] == 404
    finally:
        stop_http_server(server)
