"""Cluster-neutral admin helpers: wait until a Kafka cluster answers, create topics idempotently."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from modelyard.errors import ConfigError
from modelyard.kafka.config import MAX_MESSAGE_BYTES
from modelyard.topics import audit_topic, pipeline_topics

__all__ = ["create_topics", "ensure_pipeline_topics", "partition_counts", "wait_for_kafka"]

_PROBE_TIMEOUT_S = 0.5


def _admin(bootstrap: str) -> AdminClient:
    # Quiet client: a broker that is still starting makes librdkafka log connection refusals.
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 1000})


def wait_for_kafka(bootstrap: str, timeout_s: float = 10.0) -> None:
    """Return once a metadata request to ``bootstrap`` answers; raise TimeoutError otherwise."""
    admin = _admin(bootstrap)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        remaining = max(0.05, min(_PROBE_TIMEOUT_S, deadline - time.monotonic()))
        try:
            metadata = admin.list_topics(timeout=remaining)
        except KafkaException as exc:  # not answering yet: the timeout above paces the loop
            last = exc
            continue
        if metadata.brokers:
            return
    raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout_s:.1f}s: {last}")


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create topics and wait for completion; topics that already exist are left as they are.

    Create with the final partition count: some brokers (Tansu) have no CreatePartitions. Every
    topic takes records up to ``MAX_MESSAGE_BYTES`` unless ``config`` says otherwise, and has the
    cluster's ``default.replication.factor`` (3 on a cluster of three or more nodes).
    """
    settings = {"max.message.bytes": str(MAX_MESSAGE_BYTES), **(config or {})}
    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=-1, config=dict(settings))
        for name in dict.fromkeys(names)
    ]
    if not new:
        return
    admin = _admin(bootstrap)  # keep a reference: a collected client fails its futures
    futures = admin.create_topics(new, operation_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"creating topic {name!r} failed: {exc}") from exc


def partition_counts(bootstrap: str, topics: Iterable[str]) -> dict[str, int]:
    """Partitions per topic, from a metadata request (0 for a topic that does not exist)."""
    metadata = _admin(bootstrap).list_topics(timeout=10)
    return {t: len(metadata.topics[t].partitions) if t in metadata.topics else 0 for t in topics}


def ensure_pipeline_topics(bootstrap: str, prefix: str, pipeline: str, partitions: int) -> None:
    """Create a pipeline's topics (and the audit topic) where missing; ConfigError unless its
    ingress and router inbox have equal partition counts (topics that existed may differ)."""
    topics = pipeline_topics(prefix, pipeline)
    create_topics(bootstrap, [*topics, audit_topic(prefix)], partitions=partitions)
    counts = partition_counts(bootstrap, topics[:2])  # ingress, inbox
    if len(set(counts.values())) != 1:
        raise ConfigError(
            f"pipeline {pipeline!r}: ingress and router inbox need equal partition counts, "
            f"have {counts}"
        )
