"""Produce what the journal kept back into a fresh broker, before routers start.

Control records go back to the control topic in their order, with their keys, values, headers
(``modelyard-base-seq`` included, so readers chain them exactly as before) and timestamps.
Unanswered requests go back to their ingress topic and partition (by key if that partition no
longer exists), for the pipelines this ``up`` runs; requests of other pipelines stay journaled.
The journal then records where each one now sits, so its worker does not copy them twice.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import KafkaException, Producer

from modelyard.broker import partition_counts
from modelyard.kafka.config import producer_config
from modelyard.stack.journal import Journal, Kept

__all__ = ["Restored", "restore"]

log = structlog.get_logger(__name__)

_FLUSH_S = 60.0


@dataclass(frozen=True)
class Restored:
    control: int  # control records produced again
    requests: int  # unanswered requests produced again
    kept: int  # unanswered requests of pipelines not started, still journaled


def restore(bootstrap: str, journal: Journal, control: str, ingress: Collection[str]) -> Restored:
    """Produce the journal's control records to ``control`` and its unanswered requests whose
    topic is in ``ingress``; raise ``KafkaException`` if the broker does not take every one."""
    records = journal.control_records()
    pending = journal.unanswered()
    requests = [r for r in pending if r.topic in ingress]
    counts = partition_counts(bootstrap, sorted({r.topic for r in requests})) if requests else {}
    producer = _Sender(bootstrap)
    control_at = producer.send([(r, control, 0) for r in records])
    request_at = producer.send(
        [(r, r.topic, r.partition if r.partition < counts.get(r.topic, 0) else -1)
         for r in requests]
    )  # fmt: skip
    journal.moved(
        [(r.id, off) for r, (_, off) in zip(records, control_at, strict=True)],
        [(r.id, p, off) for r, (p, off) in zip(requests, request_at, strict=True)],
    )
    restored = Restored(len(records), len(requests), len(pending) - len(requests))
    said = (f"restored {restored.control} control records, {restored.requests} unanswered "
            f"requests from {journal.path.parent}")  # fmt: skip
    log.info(said, kept_for_other_pipelines=restored.kept)
    return restored


class _Sender:
    """One idempotent producer: records of one partition land in the order they are sent."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = Producer(producer_config(bootstrap))

    def send(self, items: Sequence[tuple[Kept, str, int]]) -> list[tuple[int, int]]:
        """(partition, offset) of each record, once every one is acknowledged."""
        where: list[tuple[int, int] | None] = [None] * len(items)
        errors: list[Any] = []
        for i, (kept, topic, partition) in enumerate(items):
            while True:
                try:
                    self._producer.produce(
                        topic, kept.value, kept.key, partition=partition, headers=kept.headers,
                        timestamp=max(0, kept.timestamp),
                        on_delivery=self._report(i, where, errors),
                    )  # fmt: skip
                    break
                except BufferError:  # the local queue is full: let acknowledgements drain it
                    self._producer.poll(0.05)
            self._producer.poll(0)
        left = self._producer.flush(_FLUSH_S)
        if errors or left:
            raise KafkaException(errors[0] if errors else f"{left} records not acknowledged")
        return [w for w in where if w is not None]

    def _report(self, i: int, where: list[tuple[int, int] | None], errors: list[Any]) -> Any:
        def on_delivery(error: Any, msg: Any) -> None:
            if error is not None:
                errors.append(error)
            else:
                where[i] = (msg.partition(), msg.offset())

        return on_delivery
