"""Kafka broker helpers: the embedded Tansu launcher plus cluster-neutral readiness and topic tools.

Only :class:`EmbeddedBroker` knows about Tansu; :func:`wait_for_kafka` and :func:`create_topics`
work against any Kafka-protocol cluster.
"""

from __future__ import annotations

from modelyard.broker.admin import (
    create_topics,
    ensure_pipeline_topics,
    partition_counts,
    wait_for_kafka,
)
from modelyard.broker.embedded import BrokerStartError, EmbeddedBroker, free_port

__all__ = [
    "BrokerStartError",
    "EmbeddedBroker",
    "create_topics",
    "ensure_pipeline_topics",
    "free_port",
    "partition_counts",
    "wait_for_kafka",
]
