"""The shadow auditor: reads a pipeline's shadow topic, writes one hop record per shadow run.

Its own process (``modelyard shadow-audit``; ``modelyard up`` runs one per pipeline at a lower
CPU priority), so pairing and comparing shadow replies costs the router nothing. Offsets are
committed after the records written so far are acknowledged, and never past a half of a pair
still waiting for its other half: an auditor that stops or crashes, or loses a partition to
another, leaves those to be read again, so every shadow run is recorded at least once (a pair
completed after the oldest waiting half is recorded again after a restart). Each record is also
handed to the stage's shadow-disagreement guard, when one is given (``shadows/guard.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from modelyard.audit import encode_audit_values
from modelyard.errors import DecodeError
from modelyard.kafka.config import (
    BACKGROUND_CONSUMER,
    BACKGROUND_PRODUCER,
    consumer_config,
    producer_config,
)
from modelyard.shadows.guard import ShadowGuard
from modelyard.shadows.pairs import Pair, ShadowPairs, Side, shadow_hop_record
from modelyard.topics import audit_topic, pipeline_shadow_topic
from modelyard.wire import decode_envelope
from modelyard.wire.headers import H

__all__ = ["ShadowAuditor"]

log = structlog.get_logger("modelyard.shadows")


class ShadowAuditor:
    def __init__(
        self,
        bootstrap: str,
        pipeline: str,
        *,
        prefix: str = "yard",
        ttl_s: float = 60.0,
        registry: CollectorRegistry | None = None,
        kafka: dict[str, Any] | None = None,
        guard: ShadowGuard | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._guard = guard
        self._topic = pipeline_shadow_topic(prefix, pipeline)
        self._audit = audit_topic(prefix)
        self._pairs = ShadowPairs(ttl_s)
        group = f"{prefix}.g.p.{pipeline}.shadow-audit"
        self._consumer = Consumer(consumer_config(bootstrap, group, kafka, **BACKGROUND_CONSUMER))
        self._producer = Producer(producer_config(bootstrap, kafka, **BACKGROUND_PRODUCER))
        self._stop, self._joined = threading.Event(), threading.Event()
        self._last_commit = 0.0
        self.failure: BaseException | None = None
        self._runs = Counter(
            "modelyard_shadow_runs", "Shadow executions audited, by outcome and agreement.",
            ["pipeline", "stage", "model", "version", "outcome", "agrees"],
            registry=registry or CollectorRegistry(),
        )  # fmt: skip
        self._thread = threading.Thread(
            target=self._run, name="modelyard-shadow-audit", daemon=True
        )

    def start(self) -> None:
        self._consumer.subscribe(
            [self._topic], on_assign=lambda *_: self._joined.set(), on_revoke=self._on_revoke
        )
        self._thread.start()

    def wait_joined(self, timeout_s: float) -> bool:
        return self._joined.wait(timeout_s)

    @property
    def waiting(self) -> int:
        """Halves of pairs read and still waiting for their other half."""
        return len(self._pairs)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for msg in self._consumer.consume(500, 0) or self._poll():
                    self._take(msg)
                for pair in self._pairs.expire():
                    self._record(pair)
                self._producer.poll(0)
                self._commit_if_due()
        except BaseException as exc:
            self.failure = exc
            log.exception("shadow auditor stopped on failure")
        finally:
            self._commit(self._consumer.assignment(), wait=True)
            self._consumer.close()

    def _poll(self) -> list[Message]:
        msg = self._consumer.poll(0.1)
        return [msg] if msg is not None else []

    def _take(self, msg: Message) -> None:
        if msg.error() is not None:
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", error=str(msg.error()))
            return
        headers = {k: v.decode("utf-8", "replace") for k, v in msg.headers() or [] if v is not None}
        try:
            envelope = decode_envelope(msg.value() or b"")
        except DecodeError as exc:
            log.warning("undecodable record on the shadow topic", error=exc.message)
            return
        role = "shadow" if headers.get(H.SHADOW) == "1" else headers.get(H.SHADOW_ROLE, "")
        if role not in ("primary", "shadow"):
            return
        side = Side(
            envelope, headers, msg.timestamp()[1] / 1000,
            partition=msg.partition(), offset=msg.offset(),
        )  # fmt: skip
        pair = self._pairs.add((envelope.request_id, envelope.stage or ""), role, side)
        if pair is not None:
            self._record(pair)

    def _record(self, pair: Pair) -> None:
        values = shadow_hop_record(self.pipeline, pair)
        if values is None:
            return
        self._producer.produce(
            self._audit, encode_audit_values("hop", values), values["request_id"]
        )
        agrees = values["agrees"]
        labels = (values["stage"], values["model"], values["version"], values["outcome"])
        self._runs.labels(
            self.pipeline, *labels, "-" if agrees is None else str(agrees).lower()
        ).inc()
        if self._guard is not None:
            self._guard.observe(values)

    def _commit_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_commit < 1.0:
            return
        self._last_commit = now
        self._commit(self._consumer.assignment())

    def _commit(self, partitions: list[TopicPartition], *, wait: bool = False) -> None:
        """Commit what is recorded and acknowledged, up to the oldest half still waiting."""
        if not partitions or self._producer.flush(5) != 0:
            return
        offsets = self._safe_offsets(partitions)
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=not wait)
        except Exception as exc:  # the broker is busy or the group rebalancing: next time
            log.debug("commit skipped", error=str(exc))

    def _safe_offsets(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        floor = self._pairs.held_floor()
        return [
            TopicPartition(
                tp.topic, tp.partition, min(tp.offset, floor.get(tp.partition, tp.offset))
            )
            for tp in self._consumer.position(partitions)
            if tp.offset >= 0  # nothing read there yet
        ]

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Another auditor takes these: commit, then forget their waiting halves (the new owner
        reads them again from the commit) so they are not recorded here as unanswered."""
        self._commit(partitions, wait=True)
        dropped = self._pairs.drop_partitions({tp.partition for tp in partitions})
        if dropped:
            log.info("partitions revoked; waiting halves left to their new owner", count=dropped)
