"""Caller-named destinations: reply partitions checked, permanent failures told apart."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from modelyard.kafka.delivery import PartitionCounts, is_permanent


def test_a_reply_partition_the_topic_lacks_falls_back_to_the_key() -> None:
    looked: list[str] = []

    def lookup(topic: str) -> int:
        looked.append(topic)
        if topic == "missing":
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))
        return 4

    counts = PartitionCounts(lookup)
    assert counts.partition("inbox", 3) == 3
    assert counts.partition("inbox", 999) == -1
    assert counts.partition("inbox", 2) == 2
    assert counts.partition("missing", 0) == -1
    assert counts.partition("anything", -1) == -1
    assert looked == ["inbox", "missing"]  # each topic looked up once


def test_permanent_failures_are_told_from_transient_ones() -> None:
    assert is_permanent(KafkaError(KafkaError._UNKNOWN_PARTITION))
    assert is_permanent(KafkaError(KafkaError.TOPIC_EXCEPTION))
    assert not is_permanent(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert not is_permanent(KafkaError(KafkaError._ALL_BROKERS_DOWN))
