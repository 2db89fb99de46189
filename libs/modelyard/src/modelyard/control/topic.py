"""Kafka I/O over the control plane's pure core: read the state, write a change, follow changes.

- :func:`read_state` reads ``yard.control`` from its first offset to its end and folds it with
  the rule of :mod:`modelyard.control.chain`: per pipeline, a record built on an older state
  than the one already applied lost a race and is ignored; otherwise the last record wins, so
  the result is the same whether or not the broker has compacted the topic. Undecodable records
  are logged and skipped; with a ``verifier``, records that fail it (unsigned, forged, not
  authorised, not deployable: :mod:`modelyard.control.verify`) are rejected.
- :func:`write_change` reads the current state, builds the record and signs it with the
  ``signer``'s key (:mod:`modelyard.control.signing`; a change that does not apply raises
  ``ControlError``, one the ``verifier`` would reject raises ``RejectedRecord``, and nothing is
  written), produces it keyed by pipeline and naming the seq it was built on, waits for the
  broker's acknowledgement, then reads back to its offset: written only if readers apply it
  there (:class:`ConcurrentChangeError` otherwise; re-read and retry).
- :class:`~modelyard.control.follower.ControlFollower` keeps a live snapshot (routers, ``up``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from modelyard.broker.admin import create_topics
from modelyard.control.anchor import anchor_for
from modelyard.control.chain import BASE_HEADER, Chain, Positioned
from modelyard.control.changes import Change, ControlError, Reassert, Withdraw
from modelyard.control.describe import describe_change
from modelyard.control.follower import ControlFollower
from modelyard.control.messages import decode_message
from modelyard.control.reader import control_consumer, open_partition
from modelyard.control.routing import PipelineRouting
from modelyard.control.signing import signed_record
from modelyard.control.state import ControlRecord, ControlState, encode_record, make_record
from modelyard.control.verify import ControlVerifier, RejectedRecord
from modelyard.errors import ModelyardError, UnavailableError
from modelyard.kafka.config import producer_config
from modelyard.keys import SigningKey
from modelyard.topics import control_topic

__all__ = [
    "ConcurrentChangeError",
    "ControlFollower",
    "Positioned",
    "Withdrawal",
    "confirm_record",
    "ensure_control_topic",
    "produce_record",
    "read_records",
    "read_state",
    "withdrawer",
    "write_change",
]

log = structlog.get_logger(__name__)

_POLL_S = 0.2
_REASSERTS = 3  # attempts at making a pipeline's last record one that readers applied


class ConcurrentChangeError(ControlError):
    """Another writer's change to the same pipeline landed first; this one was not applied.
    Re-read and retry if the change still makes sense."""


def ensure_control_topic(
    bootstrap: str, prefix: str = "yard", *, kafka: Mapping[str, Any] | None = None
) -> str:
    """Create the control topic (one partition, compacted) unless it exists; returns its name.
    ``kafka``: the caller's client settings (SASL credentials on a secured cluster)."""
    topic = control_topic(prefix)
    create_topics(
        bootstrap, [topic], partitions=1, config={"cleanup.policy": "compact"}, kafka=kafka
    )
    return topic


def read_records(
    bootstrap: str,
    *,
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
    verifier: ControlVerifier | None = None,
) -> list[Positioned]:
    """Every decodable record of the control topic in topic order ([] if the topic does not
    exist), each marked ``applied`` or not: a record that lost a race
    (:mod:`modelyard.control.chain`), or one the ``verifier`` rejected (``rejected`` set)."""
    return _read(bootstrap, control_topic(prefix), kafka, timeout_s, verifier) or []


def read_state(
    bootstrap: str,
    *,
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
    verifier: ControlVerifier | None = None,
) -> ControlState:
    """The routing state the control topic holds now: the last applied record of each pipeline."""
    records = read_records(bootstrap, prefix=prefix, kafka=kafka, timeout_s=timeout_s,
                           verifier=verifier)  # fmt: skip
    return _state(records)


def _state(records: list[Positioned]) -> ControlState:
    return ControlState.from_records(p.record for p in records if p.applied)


def write_change(
    bootstrap: str,
    pipeline: str,
    change: Change,
    *,
    signer: SigningKey | None = None,
    actor: str | None = None,
    verifier: ControlVerifier | None = None,
    reason: str = "",
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> ControlRecord:
    """Apply ``change`` to ``pipeline``'s current routing and write the record, signed by
    ``signer`` (its actor is the key's name); returns it. Without a signer the record is
    unsigned, by ``actor``: only readers that verify nothing (``--insecure-control``) apply it.

    The state is read, and the record checked before it is written, with ``verifier``: pass
    the keyring the routers use, so the writer folds the topic as they do. Raises
    ``ControlError`` (nothing written) when the change does not apply, ``RejectedRecord`` when
    readers would not apply it (nothing written) or did not, :class:`ConcurrentChangeError`
    when another writer's change landed first and this one was not applied, and
    ``UnavailableError`` when the broker does not acknowledge in time.
    """
    topic = control_topic(prefix)
    before = _read(bootstrap, topic, kafka, timeout_s, verifier)
    if before is None:
        ensure_control_topic(bootstrap, prefix, kafka=kafka)
        before = []
    current = _state(before).pipeline(pipeline)
    anchor = _anchor(before, pipeline, signer, verifier)
    record = _build(current, change, signer=signer, actor=actor, reason=reason, anchor=anchor)
    if verifier is not None:
        verifier.verify(current, record, current.seq)  # refused here, not by every router
    offset = produce_record(bootstrap, record, prefix=prefix, kafka=kafka, timeout_s=timeout_s)
    try:
        confirm_record(bootstrap, record, offset, prefix=prefix, kafka=kafka, timeout_s=timeout_s,
                       verifier=verifier)  # fmt: skip
    except ConcurrentChangeError:
        try:
            _reassert(bootstrap, pipeline, signer=signer, actor=record.actor, prefix=prefix,
                      kafka=kafka, timeout_s=timeout_s, verifier=verifier)  # fmt: skip
        except ModelyardError as exc:  # best effort: the lost race is what the caller must hear
            log.warning("control reassert failed", pipeline=pipeline, error=exc.message)
        raise
    log.info("control change written", pipeline=pipeline, seq=record.seq, offset=offset,
             change=describe_change(change), actor=record.actor, key_id=record.key_id)  # fmt: skip
    return record


def _build(
    current: PipelineRouting,
    change: Change,
    *,
    signer: SigningKey | None,
    actor: str | None,
    reason: str,
    anchor: ControlRecord | None = None,
) -> ControlRecord:
    if signer is not None:
        return signed_record(current, change, signer=signer, reason=reason, anchor=anchor)
    if not actor:
        raise ValueError("write_change needs a signer (or, for an unsigned record, an actor)")
    return make_record(current, change, actor=actor, reason=reason)


def _anchor(
    records: list[Positioned],
    pipeline: str,
    signer: SigningKey | None,
    verifier: ControlVerifier | None,
) -> ControlRecord | None:
    """The anchor a record by ``signer`` carries (:mod:`modelyard.control.anchor`): only a
    writer key's record, where the keyring says what the key may do, has one."""
    keyring = verifier.keyring if verifier is not None else None
    entry = keyring.get(signer.key_id) if keyring is not None and signer is not None else None
    if entry is None or entry.may_change(pipeline):
        return None
    return anchor_for([p.record for p in records if p.applied and p.record.key == pipeline])


def _read(
    bootstrap: str,
    topic: str,
    kafka: Mapping[str, Any] | None,
    timeout_s: float,
    verifier: ControlVerifier | None = None,
    *,
    min_end: int = 0,
) -> list[Positioned] | None:
    consumer = control_consumer(bootstrap, kafka, quiet=True)
    try:
        end = open_partition(consumer, topic, timeout_s)
        if end is None:
            return None
        deadline = time.monotonic() + timeout_s
        return _read_until(consumer, topic, max(end, min_end), deadline, verifier)
    finally:
        consumer.close()


def _read_until(
    consumer: Consumer,
    topic: str,
    end: int,
    deadline: float,
    verifier: ControlVerifier | None,
) -> list[Positioned]:
    """Records until a partition EOF at or past ``end``, marked by the chain rule."""
    chain = Chain(verifier, quiet=True)  # the follower reports an ignored record, once
    records: list[Positioned] = []
    while (remaining := deadline - time.monotonic()) > 0:
        msg = consumer.poll(min(_POLL_S, remaining))
        if msg is None:
            continue
        if msg.error() is None:
            got = decode_message(msg)
            if got is not None:
                records.append(chain.offer(got))
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
        headers=[(BASE_HEADER, str(record.seq - 1).encode())],  # built on: control/chain.py
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
    verifier: ControlVerifier | None = None,
) -> None:
    """Read the topic to ``offset``: the record there must be ``record``, and readers must
    apply it (:class:`ConcurrentChangeError` when it was built on a state that another
    writer's record had already replaced: :mod:`modelyard.control.chain`; ``RejectedRecord``
    when ``verifier`` rejects it).

    Records after ``offset`` do not matter: readers apply only those built on ours or later.
    """
    topic = control_topic(prefix)
    records = _read(bootstrap, topic, kafka, timeout_s, verifier, min_end=offset + 1) or []
    mine = [p for p in records if p.record.key == record.key and p.offset <= offset]
    if not mine or mine[-1].offset != offset or mine[-1].record != record:
        raise ControlError(f"control record of {record.key!r} at offset {offset} did not read back")
    if mine[-1].rejected is not None:
        raise RejectedRecord(mine[-1].rejected, f"readers rejected it: {mine[-1].detail}")
    winner = next((p.record for p in reversed(mine) if p.applied), None)
    if mine[-1].applied or winner == record:  # applied, or a producer retry's second copy
        return
    won = "another writer's change" if winner is None else (
        f"{winner.actor}'s {describe_change(winner.change)!r} (seq {winner.seq})"
    )  # fmt: skip
    raise ConcurrentChangeError(
        f"pipeline {record.key!r}: another change won: {won} landed first; this one "
        f"({describe_change(record.change)!r}) was built on the state before it and is not "
        f"applied; check the status and retry"
    )


def _reassert(
    bootstrap: str,
    pipeline: str,
    *,
    signer: SigningKey | None,
    actor: str,
    prefix: str,
    kafka: Mapping[str, Any] | None,
    timeout_s: float,
    verifier: ControlVerifier | None,
) -> None:
    """After a lost race: make the pipeline's last record one that readers applied again.

    The losing record is now the last of its key, the one compaction keeps; a reader that met
    it without the records before it would apply it. A ``reassert`` (no change but ``seq``)
    built on the current state puts the truth last again. Best effort (logged): whatever
    applied change is written next to the pipeline does the same.
    """
    topic = control_topic(prefix)
    for attempt in range(_REASSERTS + 1):
        records = [p for p in _read(bootstrap, topic, kafka, timeout_s, verifier) or []
                   if p.record.key == pipeline and p.rejected is None]  # fmt: skip
        if not records or records[-1].applied:
            return
        if attempt < _REASSERTS:
            current = _state(records).pipeline(pipeline)
            heal = _build(current, Reassert(), signer=signer, actor=actor,
                          reason="after a lost race",
                          anchor=_anchor(records, pipeline, signer, verifier))  # fmt: skip
            produce_record(bootstrap, heal, prefix=prefix, kafka=kafka, timeout_s=timeout_s)
    log.warning(
        "control topic: the last record of a pipeline is one readers ignored",
        pipeline=pipeline,
        fix="any change to the pipeline puts the truth last",
    )


Withdrawal = Callable[[str, str, str, str], None]  # (pipeline, stage, version, reason)


def withdrawer(
    bootstrap: str,
    *,
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    signer: SigningKey | None = None,
    verifier: ControlVerifier | None = None,
) -> Withdrawal:
    """What a guard calls to take a version's traffic away: one ``Withdraw`` record that
    ``signer`` (a writer key) signs, its reason kept; without a signer it can only say so."""

    def withdraw(pipeline: str, stage: str, version: str, reason: str) -> None:
        if signer is None:
            log.error("guard tripped; no writer key to sign the withdrawal", reason=reason)
            return
        write_change(bootstrap, pipeline, Withdraw(stage=stage, version=version), signer=signer,
                     verifier=verifier, reason=reason, prefix=prefix, kafka=kafka)  # fmt: skip

    return withdraw
