"""The audit sink's control_changes rows say what routers did with each control record: a
signed change accepted, a forged one (plain Kafka client, no signature) rejected with the
reason, a value that is no control record rejected as invalid, and, after a restart, a record
judged against the whole topic (the fold starts at its first offset again)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from modelyard.audit.store import ControlChangeRow, open_store
from modelyard.control import ControlRecord, ControlState, Rollout, encode_record, make_record
from modelyard.control.chain import BASE_HEADER
from modelyard.control.signing import signed_record
from modelyard.control.topic import ensure_control_topic, write_change
from modelyard.sink import AuditSink, SinkSettings
from pydantic import SecretStr

from tests.support import keys
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _sink(broker: str, prefix: str, store: str, tmp_path: Path) -> AuditSink:
    settings = SinkSettings(
        audit_store=SecretStr(store), bootstrap=broker, topic_prefix=prefix,
        keyring=Path(os.environ["MODELYARD_KEYRING"]), batch_size=10, state_dir=tmp_path,
    )  # fmt: skip
    return AuditSink(settings, consumer_overrides={"auto.offset.reset": "earliest"})


def _forge(broker: str, prefix: str, records: list[tuple[bytes, ControlRecord | None]]) -> None:
    """Produce as any Kafka client can: no modelyard code on the way."""
    producer = Producer({"bootstrap.servers": broker})
    for value, record in records:
        headers = [] if record is None else [(BASE_HEADER, str(record.seq - 1).encode())]
        producer.produce(f"{prefix}.control", value, key=b"docs", headers=headers, partition=0)
    assert producer.flush(10) == 0


def _rows(store: str, count: int) -> list[ControlChangeRow]:
    with open_store(store) as opened:
        wait_until(lambda: len(opened.control_changes()) >= count, f"{count} control rows")
        return opened.control_changes()


def _running(sink: AuditSink, then: Callable[[], list[ControlChangeRow]]) -> list[ControlChangeRow]:
    sink.start()
    try:
        assert sink.wait_ready(60)
        return then()
    finally:
        sink.stop()


def test_forged_record_rejected_signed_accepted_and_judged_on_the_whole_topic(
    broker: str, unique: str, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'audit.db'}"
    ensure_control_topic(broker, unique)
    empty = ControlState().pipeline("docs")
    signed = write_change(broker, "docs", Rollout(stage="s", version="1"), signer=keys.admin(),
                          verifier=keys.verifier(), prefix=unique)  # fmt: skip
    forged = make_record(signed.state, Rollout(stage="s", version="2"), actor="admin")
    _forge(broker, unique, [(encode_record(forged), forged), (b"not a control record", None)])

    rows = _running(_sink(broker, unique, store, tmp_path), lambda: _rows(store, 3))
    by_offset = {r.topic_offset: r for r in rows}
    assert (by_offset[0].verdict, by_offset[0].reason, by_offset[0].who) == (
        "accepted", None, keys.admin().name
    )  # fmt: skip
    assert by_offset[1].verdict == "rejected"
    assert by_offset[1].reason is not None
    assert by_offset[1].reason.startswith("unsigned: ")
    assert by_offset[1].who == "admin"  # what it claims, kept as evidence
    assert by_offset[2].verdict == "rejected"
    assert by_offset[2].reason is not None
    assert by_offset[2].reason.startswith("invalid: ")
    assert by_offset[2].raw == b"not a control record"

    # signed by the admin, but built on the state before the first change: routers, which
    # hold seq 1, ignore it. A restarted sink resumes at offset 3 and must fold 0-2 to see it
    stale = signed_record(empty, Rollout(stage="s", version="3"), signer=keys.admin())
    _forge(broker, unique, [(encode_record(stale), stale)])
    rows = _running(_sink(broker, unique, store, tmp_path), lambda: _rows(store, 4))
    assert len(rows) == 4
    assert rows[3].verdict == "ignored"
    assert rows[3].reason is not None
    assert rows[3].reason.startswith("lost_race: ")
