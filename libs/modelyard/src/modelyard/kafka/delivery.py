"""Records sent where a caller asked: failures that must not stop a partition.

A reply goes to the ``reply-to`` topic (and ``reply-partition``) that the request named. A caller
can name a partition that does not exist, a topic nobody may write to, or one the cluster refuses;
librdkafka then fails that record for good. Treating such a failure like a lost internal record
(stop, commit nothing, redeliver after a restart) turns one message into a crash loop, so these
permanent failures of caller-named destinations are logged and counted instead. Transient
failures (timeouts, brokers down) still stop the worker: a restart delivers them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException

__all__ = ["PartitionCounts", "is_permanent", "producer_partition_count"]

# librdkafka and broker error codes that mean "this record can never be delivered there"
_PERMANENT = frozenset({
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._INVALID_ARG,
    KafkaError.TOPIC_EXCEPTION,  # an invalid topic name
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.POLICY_VIOLATION,
})  # fmt: skip


def is_permanent(error: KafkaError) -> bool:
    """Whether a failed record would fail again however often it were sent."""
    return error.code() in _PERMANENT


class PartitionCounts:
    """Partition counts of the topics replies go to, looked up once per topic (bounded), so a
    ``reply-partition`` beyond a topic's partitions is ignored and the reply sent by key."""

    def __init__(
        self,
        lookup: Callable[[str], int],
        size: int = 1024,
        refresh_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup, self._size, self._refresh_s, self._clock = lookup, size, refresh_s, clock
        self._counts: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def partition(self, topic: str, wanted: int) -> int:
        """``wanted`` if ``topic`` has it, else -1 (the key decides)."""
        if wanted < 0:
            return -1
        count, looked_at = self._counts.get(topic, (0, None))
        if looked_at is None or (wanted >= count and self._clock() - looked_at > self._refresh_s):
            count = self._count(topic)  # unknown, or perhaps grown since: look (again)
        return wanted if wanted < count else -1

    def _count(self, topic: str) -> int:
        try:
            count = self._lookup(topic)
        except KafkaException:
            count = 0
        self._counts[topic] = (count, self._clock())
        if len(self._counts) > self._size:
            self._counts.popitem(last=False)
        return count


def producer_partition_count(producer: object, timeout_s: float = 5.0) -> Callable[[str], int]:
    """A ``PartitionCounts`` lookup through a client's metadata request."""

    def count(topic: str) -> int:
        metadata = producer.list_topics(topic, timeout=timeout_s)  # type: ignore[attr-defined]
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return 0
        return len(found.partitions)

    return count
