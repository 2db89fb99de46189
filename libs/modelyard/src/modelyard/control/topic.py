"""Kafka I/O over the control plane's pure core: read the state, write a change, follow changes.

- :func:`read_state` reads ``yard.control`` from its first offset to its end and folds it with
  :class:`~modelyard.control.ControlState`: the last record per key wins, so the result is the
  same whether or not the broker has compacted the topic. Undecodable records are logged and
  skipped.
- :func:`write_change` reads the current state, builds the record with
  :func:`~modelyard.control.make_record` (a change that does not apply raises ``ControlError``
  and writes nothing), produces it keyed by pipeline, waits for the broker's acknowledgement,
  then re-reads to check that every later record of the pipeline was built on it, i.e. that no
  concurrent writer replaced it (:class:`ConcurrentChangeError`; re-read and retry).
- :class:`~modelyard.control.follower.ControlFollower` keeps a live snapshot (routers, ``up``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from modelyard.broker.admin import create_topics
from modelyard.control._reader import Positioned, control_consumer, decode_message, open_partition
from modelyard.control.changes import Change, ControlError, apply
from modelyard.control.describe import describe_change
from modelyard.control.follower import ControlFollower
from modelyard.control.routing import PipelineRouting
from modelyard.control.state import ControlRecord, ControlState, encode_record, make_record
from modelyard.errors import UnavailableError
from modelyard.kafka.config import producer_config
from modelyard.topics import control_topic

__all__ = [
    "ConcurrentChangeError",
    "ControlFollower",
    "Positioned",
    "confirm_record",
    "ensure_control_topic",
    "produce_record",
    "read_records",
    "read_state",
    "write_change",
]

log = structlog.get_logger(__name__)

_POLL_S = 0.2


class ConcurrentChangeError(ControlError):
    """Another writer's change to the same pipeline replaced this one; re-read and retry."""


def ensure_control_topic(bootstrap: str, prefix: str = "yard") -> str:
    """Create the control topic (one partition, compacted) unless it exists; returns its name."""
    topic = control_topic(prefix)
    create_topics(bootstrap, [topic], partitions=1, config={"cleanup.policy": "compact"})
    return topic


def read_records(
    bootstrap: str,
    *,
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> list[Positioned]:
    """Every valid record of the control topic in topic order ([] if the topic does not exist)."""
    return _read(bootstrap, control_topic(prefix), kafka, timeout_s) or []


def read_state(
    bootstrap: str,
    *,
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> ControlState:
    """The routing state the control topic holds now: the last record of each pipeline."""
    records = read_records(bootstrap, prefix=prefix, kafka=kafka, timeout_s=timeout_s)
    return ControlState.from_records(p.record for p in records)


def write_change(
    bootstrap: str,
    pipeline: str,
    change: Change,
    *,
    actor: str,
    reason: str = "",
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> ControlRecord:
    """Apply ``change`` to ``pipeline``'s current routing and write the record; returns it.

    Raises ``ControlError`` (nothing written) when the change does not apply,
    :class:`ConcurrentChangeError` when another writer's record replaced this one, and
    ``UnavailableError`` when the broker does not acknowledge in time.
    """
    topic = control_topic(prefix)
    before = _read(bootstrap, topic, kafka, timeout_s)
    if before is None:
        ensure_control_topic(bootstrap, prefix)
        before = []
    current = ControlState.from_records(p.record for p in before).pipeline(pipeline)
    record = make_record(current, change, actor=actor, reason=reason)
    offset = produce_record(bootstrap, record, prefix=prefix, kafka=kafka, timeout_s=timeout_s)
    confirm_record(bootstrap, record, offset, prefix=prefix, kafka=kafka, timeout_s=timeout_s)
    log.info("control change written", pipeline=pipeline, seq=record.seq, offset=offset,
             change=describe_change(change), actor=actor)  # fmt: skip
    return record


def _read(
    bootstrap: str,
    topic: str,
    kafka: Mapping[str, Any] | None,
    timeout_s: float,
    min_end: int = 0,
) -> list[Positioned] | None:
    consumer = control_consumer(bootstrap, kafka, quiet=True)
    try:
        end = open_partition(consumer, topic, timeout_s)
        if end is None:
            return None
        return _read_until(consumer, topic, max(end, min_end), time.monotonic() + timeout_s)
    finally:
        consumer.close()


def _read_until(consumer: Consumer, topic: str, end: int, deadline: float) -> list[Positioned]:
    """Records until a partition EOF at or past ``end``."""
    records: list[Positioned] = []
    while (remaining := deadline - time.monotonic()) > 0:
        msg = consumer.poll(min(_POLL_S, remaining))
        if msg is None:
            continue
        if msg.error() is None:
            got = decode_message(msg)
            if got is not None:
                records.append(got)
        elif _end_reached(msg, end):
            return records
    raise UnavailableError(f"{topic}: end of the topic (offset {end}) not reached in time")


def _end_reached(msg: Message, end: int) -> bool:
    err: KafkaError = msg.error()
    if err.code() == KafkaError._PARTITION_EOF:
        return int(msg.offset()) >= end
    if err.fatal():
        raise KafkaException(err)
    log.debug("control topic read error", error=str(err))  # transient: the client retries
    return False


def produce_record(
    bootstrap: str,
    record: ControlRecord,
    *,
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> int:
    """Produce ``record`` to the control partition; its offset once the broker acknowledged it.

    A low-level step of :func:`write_change`, which is what callers want.
    """
    topic = control_topic(prefix)
    delivered: list[tuple[KafkaError | None, Message]] = []
    # one record, acks=all; idempotence would only cost a producer-id round trip (~0.5 s on
    # some brokers), and a duplicate from a retry is the same record (see confirm_record)
    producer = Producer(producer_config(bootstrap, kafka, **{"enable.idempotence": False}))
    producer.produce(
        topic,
        encode_record(record),
        key=record.key.encode(),
        partition=0,  # readers read partition 0: one total order of every change
        on_delivery=lambda err, msg: delivered.append((err, msg)),
    )
    producer.flush(timeout_s)
    if not delivered:
        raise UnavailableError(f"{topic}: the broker did not acknowledge within {timeout_s:.0f}s")
    err, msg = delivered[0]
    if err is not None:
        raise UnavailableError(f"{topic}: writing the control record failed: {err.str()}")
    return int(msg.offset())


def confirm_record(
    bootstrap: str,
    record: ControlRecord,
    offset: int,
    *,
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> None:
    """Re-read the topic past ``offset``: the record there must be ``record``, and every later
    record of its key must descend from it (:class:`ConcurrentChangeError` otherwise).

    A record descends from the state before it when applying its change to that state gives
    exactly its state (the reducer is deterministic), so a record built on another writer's
    state, which would replace ours for every reader, is told apart from one built on ours.
    """
    topic = control_topic(prefix)
    records = _read(bootstrap, topic, kafka, timeout_s, min_end=offset + 1) or []
    mine = [p for p in records if p.record.key == record.key]
    landed = next((p for p in mine if p.offset == offset), None)
    if landed is None or landed.record != record:
        raise ControlError(f"control record of {record.key!r} at offset {offset} did not read back")
    state = record.state
    for later in (p.record for p in mine if p.offset > offset and p.record != record):
        if not _descends(state, later):
            raise ConcurrentChangeError(
                f"pipeline {record.key!r}: another change won: {later.actor} wrote "
                f"{describe_change(later.change)!r} (seq {later.seq}) over this one "
                f"({describe_change(record.change)!r}); check the status and retry"
            )
        state = later.state


def _descends(state: PipelineRouting, record: ControlRecord) -> bool:
    """Whether ``record`` was built on ``state`` (or on one equal to it)."""
    try:
        return apply(state, record.change) == record.state
    except ControlError:
        return False
