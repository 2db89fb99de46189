"""Kafka broker helpers: two engines plus cluster-neutral readiness and topic tools.

Only :class:`EmbeddedBroker` knows about Tansu and only :class:`KafkaCluster` about Apache Kafka's
jars; :func:`wait_for_kafka` and :func:`create_topics` work against any Kafka-protocol cluster.
"""

from __future__ import annotations

from modelyard.broker.admin import (
    create_topics,
    ensure_pipeline_topics,
    partition_counts,
    wait_for_kafka,
)
from modelyard.broker.embedded import BrokerStartError, EmbeddedBroker, free_port
from modelyard.broker.kraft import KafkaCluster
from modelyard.broker.kraft_config import KAFKA_VERSION, default_kafka_lib

__all__ = [
    "KAFKA_VERSION",
    "BrokerStartError",
    "EmbeddedBroker",
    "KafkaCluster",
    "create_topics",
    "default_kafka_lib",
    "ensure_pipeline_topics",
    "free_port",
    "partition_counts",
    "wait_for_kafka",
]
