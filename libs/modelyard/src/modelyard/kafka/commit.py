"""Committing what an ``OffsetTracker`` says is finished; shared by stages and routers."""

from __future__ import annotations

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition

from modelyard.kafka.offsets import OffsetTracker

__all__ = ["commit_finished"]

log = structlog.get_logger(__name__)


def commit_finished(
    consumer: Consumer, tracker: OffsetTracker, *, asynchronous: bool
) -> list[tuple[str, int, int]]:
    """Commit each partition's gap-free finished prefix; returns the (topic, partition, offset)
    committed. A commit that fails is offered again by the tracker's next ``to_commit``."""
    offsets = tracker.to_commit()
    if not offsets:
        return []
    try:
        tps = [TopicPartition(t, p, o) for t, p, o in offsets]
        consumer.commit(offsets=tps, asynchronous=asynchronous)
    except KafkaException as exc:
        tracker.rollback(offsets)
        log.warning("commit failed; will retry", error=str(exc))
        return []
    return offsets
