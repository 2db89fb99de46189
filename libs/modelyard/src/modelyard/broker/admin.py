"""Cluster-neutral admin helpers: wait until a Kafka cluster answers, create topics idempotently."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from modelyard.errors import ConfigError
from modelyard.kafka.config import MAX_MESSAGE_BYTES
from modelyard.topics import audit_topic, pipeline_topics

__all__ = [
    "admin_client",
    "create_topics",
    "ensure_pipeline_topics",
    "partition_counts",
    "wait_for_kafka",
]

_PROBE_TIMEOUT_S = 0.5


def admin_client(bootstrap: str, kafka: Mapping[str, Any] | None = None) -> AdminClient:
    """An admin client; ``kafka``: the service's extra librdkafka settings (SASL/SSL)."""
    # Quiet client: a broker that is still starting makes librdkafka log connection refusals.
    config = {"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 1000}
    return AdminClient({**config, **(kafka or {})})


def wait_for_kafka(
    bootstrap: str, timeout_s: float = 10.0, kafka: Mapping[str, Any] | None = None
) -> None:
    """Return once a metadata request to ``bootstrap`` answers; raise TimeoutError otherwise."""
    admin = admin_client(bootstrap, kafka)
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
    *,
    kafka: Mapping[str, Any] | None = None,
) -> None:
    """Create topics and wait for completion; topics that already exist are left as they are.

    A principal without CREATE on a topic (an ACL-secured cluster, where the operator creates
    topics) is told "authorization failed" even for a topic that exists: that is fine when the
    topic exists (its metadata says so), an error otherwise.

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
    admin = admin_client(bootstrap, kafka)  # keep a reference: a collected client fails its futures
    futures = admin.create_topics(new, operation_timeout=timeout_s)
    refused = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            code = exc.args[0].code()
            if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                refused.append(name)
            elif code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"creating topic {name!r} failed: {exc}") from exc
    missing = [t for t, n in partition_counts(bootstrap, refused, kafka).items() if not n]
    if missing:
        raise RuntimeError(f"not allowed to create topics {missing} (ACLs), and they do not exist")


def partition_counts(
    bootstrap: str, topics: Iterable[str], kafka: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Partitions per topic, from a metadata request (0 for a topic that does not exist, or
    that the principal may not describe)."""
    names = list(topics)
    if not names:
        return {}
    metadata = admin_client(bootstrap, kafka).list_topics(timeout=10)
    found = {name: t for name, t in metadata.topics.items() if t.error is None}
    return {t: len(found[t].partitions) if t in found else 0 for t in names}


def ensure_pipeline_topics(
    bootstrap: str,
    prefix: str,
    pipeline: str,
    partitions: int,
    kafka: Mapping[str, Any] | None = None,
) -> None:
    """Create a pipeline's topics (and the audit topic) where missing; ConfigError unless its
    ingress and router inbox have equal partition counts (topics that existed may differ)."""
    topics = pipeline_topics(prefix, pipeline)
    create_topics(bootstrap, [*topics, audit_topic(prefix)], partitions=partitions, kafka=kafka)
    counts = partition_counts(bootstrap, topics[:2], kafka)  # ingress, inbox
    if len(set(counts.values())) != 1:
        raise ConfigError(
            f"pipeline {pipeline!r}: ingress and router inbox need equal partition counts, "
            f"have {counts}"
        )
