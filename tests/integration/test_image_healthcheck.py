"""The image's HEALTHCHECK command (deploy/docker/Dockerfile), run as Docker would run it against
a real metrics server on loopback: unhealthy until /healthz/ready answers 200."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from modelyard.telemetry import start_http_server, stop_http_server
from prometheus_client import CollectorRegistry

from tests.support.deploy import exec_form, parse_dockerfile

pytestmark = pytest.mark.integration


def test_healthcheck_follows_readiness_on_the_configured_port() -> None:
    (check,) = parse_dockerfile()[1][-1].all("HEALTHCHECK")
    program, *args = exec_form(check)
    assert program == "python"  # the image's PATH puts the locked environment's first
    ready = {"model": False}
    server, port = start_http_server("127.0.0.1", 0, CollectorRegistry(), lambda: dict(ready))
    try:
        env = {**os.environ, "MODELYARD_METRICS_PORT": str(port)}

        def probe() -> int:
            done = subprocess.run(
                [sys.executable, *args], env=env, capture_output=True, check=False
            )
            return done.returncode

        assert probe() != 0
        ready["model"] = True
        assert probe() == 0
    finally:
        stop_http_server(server)
