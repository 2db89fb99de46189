"""Reading one request's records: from the audit store when one is configured, else off the
audit topic (the two sources of ``modelyard trace``).

The topic is read from the beginning to its current end on every partition (``assign()``, no
group, nothing committed), keeping the records whose key is the request id. Production keeps
the audit trail in a queryable store as well; this needs nothing but the broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from modelyard.audit.records import HopRecord, RequestRecord, decode_audit
from modelyard.audit.store import Filters, open_store
from modelyard.errors import DecodeError, UnavailableError

__all__ = ["AuditScan", "read_request_records", "read_stored_records"]

_DRAIN = 1000


@dataclass
class AuditScan:
    """What a read of the audit topic found for one request."""

    records: list[HopRecord | RequestRecord] = field(default_factory=list)
    scanned: int = 0  # records read, of every request
    unreadable: int = 0  # records of this request that did not parse
    complete: bool = False  # every partition was read to its end before the timeout


def read_request_records(
    bootstrap: str,
    topic: str,
    request_id: str,
    *,
    kafka: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> AuditScan:
    """Every record of ``request_id`` in ``topic``, in topic order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"modelyard-trace-{uuid.uuid4().hex[:8]}",  # required; never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,  # how we know we reached the end
            "fetch.wait.max.ms": 10,
            "log.connection.close": False,
            **(kafka or {}),
        }
    )
    try:
        partitions = _partitions(consumer, topic, timeout_s)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        return _scan(consumer, request_id.encode(), set(partitions), time.monotonic() + timeout_s)
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
    except KafkaException as exc:
        reason = exc.args[0].str()
        raise UnavailableError(f"cannot read the audit topic {topic}: {reason}") from None
    if metadata.error is not None:  # absent: nothing was ever audited under this prefix
        return []
    return sorted(metadata.partitions)


def _scan(consumer: Consumer, key: bytes, unfinished: set[int], deadline: float) -> AuditScan:
    scan = AuditScan()
    while unfinished and time.monotonic() < deadline:
        for msg in consumer.consume(_DRAIN, 0.1):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    unfinished.discard(msg.partition())
                continue
            scan.scanned += 1
            if msg.key() == key:
                _keep(scan, msg.value() or b"")
    scan.complete = not unfinished
    return scan


def _keep(scan: AuditScan, value: bytes) -> None:
    try:
        record = decode_audit(value)
    except DecodeError:
        scan.unreadable += 1
        return
    if isinstance(record, HopRecord | RequestRecord):  # checkpoints sign, they do not trace
        scan.records.append(record)


def read_stored_records(store_url: str, request_id: str) -> AuditScan:
    """Every record of ``request_id`` in the audit store, oldest first (each parsed from the
    bytes the writer produced, as the topic would give it)."""
    scan = AuditScan(complete=True)
    with open_store(store_url) as store:
        for row in store.query(Filters(request_id=request_id)):
            scan.scanned += 1
            _keep(scan, row.raw)
    return scan
