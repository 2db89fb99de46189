"""A worker's audit writer: its producer seals every audit record into the writer's hash chain.

Sealing happens where records are produced, in the order they are produced, so a chain is
exactly what the audit partition holds: a record refused by the worker before it was sent was
never sealed. Each record goes to the partition its key hashes to (CRC32, the same choice as
librdkafka's default partitioner), so one request's records stay on one partition and in one
chain. Checkpoints are produced when due (checked as the loop polls), and for every chain with
unsigned records when the loop flushes before a revoke or on its way out.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
import zlib
from typing import Any

import structlog

from modelyard.audit.chain import AuditChain
from modelyard.kafka.delivery import producer_partition_count
from modelyard.kafka.handler import ProducerLike
from modelyard.kafka.worker import ConsumerLike, KafkaClients

__all__ = ["ChainedAuditClients", "ChainingProducer", "writer_id"]

log = structlog.get_logger(__name__)

_FINAL_FLUSH_S = 0.5  # flushes this long are the loop's revoke/close flushes, not idle ones
_DUE_CHECK_S = 0.5  # how often polls look for checkpoints due
_FULL_QUEUE_GIVE_UP_S = 60.0


def writer_id(role: str) -> str:
    """One id per process run: which worker wrote a chain (``router.docs@host:pid.ab12cd34``)."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}.{secrets.token_hex(4)}"


class ChainingProducer:
    """A producer that seals records to ``topic`` into ``chain`` and sends its checkpoints;
    everything else passes through unchanged."""

    def __init__(self, inner: Any, chain: AuditChain, topic: str) -> None:
        self._inner, self._chain, self._topic = inner, chain, topic
        self._lock = threading.Lock()  # seal and produce in one order
        self._partitions = 0
        self._next_check = 0.0

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        if topic != self._topic:
            self._inner.produce(topic, value, key, **kwargs)
            return
        partition = self._partition(key, kwargs.pop("partition", -1))
        with self._lock:
            sealed, due = self._chain.seal_due(partition, value)
            self._send(sealed, key, partition, **kwargs)
            if due:
                self._checkpoint(partition)

    def poll(self, timeout: float = 0) -> int:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _DUE_CHECK_S
            self._checkpoint_due()
        return int(self._inner.poll(timeout))

    def flush(self, timeout: float = 0) -> int:
        if timeout >= _FINAL_FLUSH_S:
            self.checkpoint_all()
        return int(self._inner.flush(timeout))

    def __len__(self) -> int:
        return len(self._inner)

    def __getattr__(self, name: str) -> Any:  # list_topics and the rest of the client
        return getattr(self._inner, name)

    def checkpoint_all(self) -> None:
        """Sign every chain's unsigned records now."""
        with self._lock:
            for partition in self._chain.partitions():
                self._checkpoint(partition)

    def _checkpoint_due(self) -> None:
        with self._lock:
            for partition in self._chain.partitions():
                if self._chain.checkpoint_due(partition):
                    self._checkpoint(partition)

    def _checkpoint(self, partition: int) -> None:
        value = self._chain.checkpoint(partition)
        if value is not None:
            self._send(value, self._chain.writer, partition, on_delivery=_checkpoint_delivered)

    def _partition(self, key: Any, asked: int) -> int:
        if asked >= 0:
            return asked
        if not self._partitions:
            try:
                count = producer_partition_count(self._inner)(self._topic)
            except AttributeError:  # a client that cannot say (a test's fake): one chain
                count = 1
            self._partitions = max(count, 1)
        raw = key.encode() if isinstance(key, str) else (key or b"")
        return zlib.crc32(raw) % self._partitions

    def _send(self, value: bytes, key: Any, partition: int, **kwargs: Any) -> None:
        """Produce a sealed record: it is in the chain now, so it is retried here (a full
        local queue) rather than sealed again by a caller's retry."""
        try:
            self._inner.produce(self._topic, value, key, partition=partition, **kwargs)
        except BufferError:
            give_up = time.monotonic() + _FULL_QUEUE_GIVE_UP_S
            while True:
                self._inner.poll(0.05)
                try:
                    self._inner.produce(self._topic, value, key, partition=partition, **kwargs)
                    return
                except BufferError:
                    if time.monotonic() > give_up:
                        raise


def _checkpoint_delivered(error: Any, _msg: Any) -> None:
    if error is not None:  # the next checkpoint covers its records too
        log.warning("audit checkpoint not delivered", error=str(error))


class ChainedAuditClients:
    """Kafka clients for a worker that writes audit records: its producer chains them."""

    def __init__(self, base: KafkaClients, chain: AuditChain, audit_topic: str) -> None:
        self._base, self.chain, self._topic = base, chain, audit_topic

    def consumer(self, config: dict[str, Any]) -> ConsumerLike:
        return self._base.consumer(config)

    def producer(self, config: dict[str, Any]) -> ProducerLike:
        return ChainingProducer(self._base.producer(config), self.chain, self._topic)
