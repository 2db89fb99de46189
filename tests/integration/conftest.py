"""Integration fixtures: the real embedded broker once per session, unique names per test."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from modelyard.broker import EmbeddedBroker
from modelyard.repository.build import BuildContext, discover_builders

__all__ = ["broker", "kafka_config", "reference_repo", "unique"]

MODEL_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "models"  # downloaded wheels


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of an embedded broker shared by the session (fresh topics per test)."""
    log = Path(tmp_path_factory.mktemp("broker")) / "broker.log"
    with EmbeddedBroker(log_file=log) as embedded:
        yield embedded.bootstrap


@pytest.fixture(scope="session")
def reference_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every reference model version, built from packages once per session (cached wheels)."""
    root = tmp_path_factory.mktemp("reference-models")
    ctx = BuildContext(root=root, cache=MODEL_CACHE)
    for builder in discover_builders().values():
        builder(ctx)
    return root


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A short name unique to this test run, for topics and consumer groups."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:32]
    return f"t-{slug}-{uuid.uuid4().hex[:8]}"


def kafka_config(bootstrap: str, *, producer: bool = False, **overrides: Any) -> dict[str, Any]:
    """Low-latency client settings for the embedded broker (consumer unless ``producer``).

    Joins wait half the session timeout on Tansu and a waiting fetch is not woken by new data,
    so both are kept short; new groups read from the earliest offset.
    """
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    if producer:
        config.update({"linger.ms": 5, "acks": "all"})
    else:
        config.update({
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1500,
            "fetch.wait.max.ms": 10,
            "group.protocol": "classic",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })  # fmt: skip
    config.update(overrides)
    return config
