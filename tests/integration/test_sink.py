"""The audit sink against the real broker and a real store (SQLite file and PostgreSQL server):
records stored once, bad records dead-lettered with their bytes, a SIGKILLed sink restarted
loses nothing and duplicates nothing, and verify catches tampering done in SQL."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from confluent_kafka import Producer
from modelyard.audit.chain import AuditChain
from modelyard.audit.store import AuditStore, Filters, open_store
from modelyard.audit.verify import verify_store
from modelyard.broker.admin import create_topics
from modelyard.keys import SigningKey
from modelyard.sink import audit_dlq_topic
from modelyard.topics import audit_topic

from tests.support.audit_records import RecordMaker, writer_keyring
from tests.support.cli_process import CliProcess
from tests.support.kafka_io import Collector
from tests.support.postgres import postgres_db, postgres_url
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
__all__ = ["postgres_db", "postgres_url"]  # fixtures used by name

KEY = SigningKey.generate("router")
PARTITIONS = 2


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    url: str = request.getfixturevalue("postgres_db")
    return url


def _sink(broker: str, prefix: str, store: str) -> CliProcess:
    """``modelyard audit-sink`` in a child process."""
    args = ["audit-sink", "--store", store, "--bootstrap", broker, "--prefix", prefix,
            "--batch-size", "100", "--no-control"]  # fmt: skip
    return CliProcess(args, "modelyard audit-sink ready")


def _produce(broker: str, topic: str, by_partition: dict[int, list[bytes]]) -> None:
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for partition, values in by_partition.items():
        for value in values:
            producer.produce(topic, value, b"k", partition=partition)
            producer.poll(0)
    assert producer.flush(30) == 0


def _rows(url: str) -> int:
    with open_store(url) as store:
        return len(list(store.query(Filters())))


def _records(makers: list[RecordMaker], start: int, count: int) -> dict[int, list[bytes]]:
    """``count`` requests per partition, ids ``p<partition>-<n>`` from ``start``."""
    return {
        p: [v for i in range(start, start + count) for v in maker.request(p, f"p{p}-{i}")]
        for p, maker in enumerate(makers)
    }


def test_sink_stores_records_once_and_dead_letters_bad_ones(
    broker: str, unique: str, store_url: str
) -> None:
    topic = audit_topic(unique)
    create_topics(broker, [topic, audit_dlq_topic(unique)], partitions=PARTITIONS)
    chain = AuditChain("w1", KEY, every_records=10)
    makers = [RecordMaker(chain) for _ in range(PARTITIONS)]
    records = _records(makers, 0, 20)
    bad = b'{"schema":1,"kind":"hop","request_id":"no fields"}'
    _produce(broker, topic, {0: [*records[0][:5], bad, b"\xff not json", *records[0][5:]],
                             1: records[1]})  # fmt: skip
    sink = _sink(broker, unique, store_url)
    try:
        sink.wait_ready()
        wait_until(lambda: _rows(store_url) == 2 * 20 * PARTITIONS, "every record stored")
        _produce(broker, topic, {0: records[0][:10]})  # delivered again
        dead = Collector(broker, audit_dlq_topic(unique), PARTITIONS).until(lambda m: len(m) >= 2)
    finally:
        assert sink.end(signal.SIGTERM) == 0, "".join(sink.lines[-30:])
    assert sorted(m.value() for m in dead) == sorted([bad, b"\xff not json"])
    with open_store(store_url) as store:
        assert len(list(store.query(Filters()))) == 2 * 20 * PARTITIONS
        report = verify_store(store, writer_keyring(KEY))
    assert report.ok, report.lines()


def test_a_killed_sink_restarted_loses_and_duplicates_nothing(
    broker: str, unique: str, store_url: str
) -> None:
    topic = audit_topic(unique)
    create_topics(broker, [topic], partitions=PARTITIONS)
    chain = AuditChain("w1", KEY, every_records=50)
    makers = [RecordMaker(chain) for _ in range(PARTITIONS)]
    per_partition = 1500
    _produce(broker, topic, _records(makers, 0, per_partition))
    total = 2 * per_partition * PARTITIONS
    sink = _sink(broker, unique, store_url)
    sink.wait_ready()
    wait_until(lambda: _rows(store_url) > 0, "the first batch stored")
    assert sink.end(signal.SIGKILL) == -signal.SIGKILL
    stored_at_kill = _rows(store_url)
    more = _records(makers, per_partition, 100)
    _produce(broker, topic, more)  # while no sink runs
    total += 2 * 100 * PARTITIONS
    restarted = _sink(broker, unique, store_url)
    try:
        restarted.wait_ready()
        wait_until(lambda: _rows(store_url) == total, "every record stored", 120)
    finally:
        assert restarted.end(signal.SIGTERM) == 0, "".join(restarted.lines[-30:])
    assert 0 < stored_at_kill < total
    with open_store(store_url) as store:
        ids = [r.request_id for r in store.query(Filters(kinds=("request",)))]
        report = verify_store(store, writer_keyring(KEY))
    assert len(ids) == len(set(ids)) == total // 2
    assert report.ok, report.lines()
    assert {c.records for c in report.chains} == {2 * (per_partition + 100)}


def test_verify_after_tampering_in_sql(store_url: str) -> None:
    """Each tamper case, done in SQL on the real database (the sink's rows, written directly)."""
    from modelyard.audit.store import Batch, parse_record  # noqa: PLC0415

    maker = RecordMaker(AuditChain("w1", KEY, every_records=8))
    with open_store(store_url, create=True) as store:
        batch = Batch()
        for value in maker.many(0, 12).values:
            batch.add(parse_record(value))
        store.write(batch)
        assert verify_store(store, writer_keyring(KEY)).ok
        _tamper(store)
        found = {(p.kind, p.seq) for p in verify_store(store, writer_keyring(KEY)).problems}
    assert found == {("edited", 3), ("deleted", 10), ("reordered", 14), ("reordered", 18)}


def _tamper(store: AuditStore) -> None:
    store.execute("UPDATE requests SET principal = 'mallory' WHERE chain_seq = 3")
    store.execute("DELETE FROM hops WHERE chain_seq = 10")
    store.execute("UPDATE hops SET chain_seq = -1 WHERE chain_seq = 14")
    store.execute("UPDATE hops SET chain_seq = 14 WHERE chain_seq = 18")
    store.execute("UPDATE hops SET chain_seq = 18 WHERE chain_seq = -1")
