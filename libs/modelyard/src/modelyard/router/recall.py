"""Which requests were answered lately: read back from the pipeline's results topic.

At least once, a router that dies after producing a result but before committing its request's
ingress offset leaves that request to its successor, which would route it again and emit a
second result. When it is given ingress partitions, a router reads the last results of every
partition of the results topic (keyed by request id) and remembers their ids beside the ones it
finished itself, so such a redelivered request is dropped, not answered twice. What it cannot
see are results still in flight when the other router died. Exactly-once routers need none of
this (docs/delivery.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, TopicPartition

from modelyard.kafka.config import consumer_config

__all__ = ["AnsweredRecall"]

log = structlog.get_logger(__name__)


class AnsweredRecall:
    """``recall()``: the request ids of the last ``per_partition`` results of each partition of
    ``topic``, read within ``timeout_s`` (what was read by then, when slower)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        per_partition: int,
        kafka: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._bootstrap, self._topic, self._kafka = bootstrap, topic, dict(kafka or {})
        self._per_partition, self._timeout_s = per_partition, timeout_s

    def recall(self) -> list[str]:
        group = f"modelyard-recall-{uuid.uuid4().hex[:12]}"  # never joined: assign() only
        overrides = {"enable.partition.eof": True, "fetch.wait.max.ms": 10}
        consumer = Consumer(consumer_config(self._bootstrap, group, self._kafka, **overrides))
        try:
            deadline = time.monotonic() + self._timeout_s
            tails = self._tails(consumer)
            consumer.assign(tails)
            return _read_keys(consumer, {tp.partition: tp.offset for tp in tails}, deadline)
        finally:
            consumer.close()

    def _tails(self, consumer: Consumer) -> list[TopicPartition]:
        metadata = consumer.list_topics(self._topic, timeout=self._timeout_s)
        found = metadata.topics.get(self._topic)
        partitions = sorted(found.partitions) if found is not None and not found.error else []
        tails = []
        for partition in partitions:
            tp = TopicPartition(self._topic, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=self._timeout_s)
            if high > low:
                tails.append(
                    TopicPartition(self._topic, partition, max(low, high - self._per_partition))
                )
        return tails


def _read_keys(consumer: Consumer, starts: dict[int, int], deadline: float) -> list[str]:
    """Keys from each partition's start until every one reported its end (or the deadline);
    records before a start (a broker may send its whole batch) are left out."""
    keys: list[str] = []
    ended: set[int] = set()
    while len(ended) < len(starts) and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.1):
            error = msg.error()
            if error is None:
                key = msg.key()
                if key and msg.offset() >= starts[msg.partition()]:
                    keys.append(key.decode("utf-8", "replace"))
            elif error.code() == KafkaError._PARTITION_EOF:
                ended.add(msg.partition())
    if len(ended) < len(starts):
        log.warning("recalled part of the answered requests", partitions=len(starts),
                    ended=len(ended), ids=len(keys))  # fmt: skip
    return keys
