"""Apache Kafka as a broker engine: one KRaft node, `modelyard broker --engine kafka`, 3 nodes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource
from modelyard.broker import (
    KAFKA_VERSION,
    BrokerStartError,
    KafkaCluster,
    create_topics,
    wait_for_kafka,
)
from modelyard.kafka.config import MAX_MESSAGE_BYTES

from tests.integration.conftest import KAFKA_LIB, broker_engine, kafka_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kafka(request: pytest.FixtureRequest) -> Iterator[str]:
    """One Apache Kafka node: the session's broker when it is Kafka, else one for this module."""
    if broker_engine() == "kafka":
        yield request.getfixturevalue("broker")
        return
    with KafkaCluster(lib=KAFKA_LIB) as node:
        yield node.bootstrap


def test_pom_pins_the_version_the_engine_runs() -> None:
    pom = (ROOT / "broker" / "kafka" / "pom.xml").read_text()
    assert re.search(r"<kafka.version>(.+)</kafka.version>", pom)[1] == KAFKA_VERSION  # type: ignore[index]
    assert (KAFKA_LIB / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()


def test_missing_jars_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BrokerStartError, match="make setup"):
        KafkaCluster(lib=tmp_path).start()


def test_topics_take_modelyard_sized_records(kafka: str, unique: str) -> None:
    create_topics(kafka, [unique])
    resource = ConfigResource(ConfigResource.Type.TOPIC, unique)
    admin = AdminClient({"bootstrap.servers": kafka})
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["max.message.bytes"].value == str(MAX_MESSAGE_BYTES)
    # auto-created on produce, as on the embedded broker, with the same record limit
    auto = f"{unique}-auto"
    producer = Producer(kafka_config(kafka, producer=True, **{"message.max.bytes": 8 << 20}))
    producer.produce(auto, b"x" * (5 << 20), b"big")
    assert producer.flush(30) == 0
    consumer = Consumer(kafka_config(kafka, **{"group.id": auto}))
    consumer.subscribe([auto])
    try:
        assert len(_read(consumer, 1)[0]) == 5 << 20
    finally:
        consumer.close()


def test_transactions_commit_and_abort(kafka: str, unique: str) -> None:
    create_topics(kafka, [unique])
    producer = Producer(kafka_config(kafka, producer=True, **{"transactional.id": unique}))
    producer.init_transactions(30)
    for value, commit in ((b"aborted", False), (b"committed", True)):
        producer.begin_transaction()
        producer.produce(unique, value)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    overrides = {"group.id": unique, "isolation.level": "read_committed"}
    consumer = Consumer(kafka_config(kafka, **overrides))
    consumer.subscribe([unique])
    try:
        assert _read(consumer, 1) == [b"committed"]
    finally:
        consumer.close()


def _read(consumer: Consumer, count: int, timeout_s: float = 30) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            values.append(msg.value() or b"")
    assert len(values) == count, f"read {len(values)} of {count}"
    return values


@pytest.mark.slow
def test_cli_engine_kafka_starts_and_stops_on_sigterm(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "modelyard.cli.broker", "--engine", "kafka",
            "--kafka-lib", str(KAFKA_LIB), "--data-dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()  # printed once the node answers
        assert first.startswith("bootstrap=127.0.0.1:"), first + proc.stdout.read()
        wait_for_kafka(first.removeprefix("bootstrap="), timeout_s=5)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # --data-dir keeps the formatted storage; the node logged its clean shutdown
    assert (tmp_path / "node-1" / "data" / "meta.properties").exists()
    assert "shut down completed" in (tmp_path / "node-1" / "node.log").read_text()


@pytest.mark.slow
def test_records_in_a_data_dir_outlive_a_restart(tmp_path: Path, unique: str) -> None:
    with KafkaCluster(lib=KAFKA_LIB, data_dir=tmp_path) as node:
        create_topics(node.bootstrap, [unique])
        _produce(Producer(kafka_config(node.bootstrap, producer=True)), unique, range(3))
    with KafkaCluster(lib=KAFKA_LIB, data_dir=tmp_path) as node:  # new ports, same storage
        consumer = Consumer(kafka_config(node.bootstrap, **{"group.id": unique}))
        consumer.subscribe([unique])
        try:
            assert _read(consumer, 3) == [b"0", b"1", b"2"]
        finally:
            consumer.close()


@pytest.mark.slow
def test_three_nodes_keep_serving_when_one_is_killed(unique: str) -> None:
    with KafkaCluster(3, lib=KAFKA_LIB) as cluster:
        create_topics(cluster.bootstrap, [unique], partitions=3)
        metadata = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=10)
        assert {len(p.replicas) for p in metadata.topics[unique].partitions.values()} == {3}
        producer = Producer(kafka_config(cluster.bootstrap, producer=True, **{
            "enable.idempotence": True, "delivery.timeout.ms": 60000}))  # fmt: skip
        _produce(producer, unique, range(100))
        cluster.kill(2)
        _produce(producer, unique, range(100, 200))  # acks=all: 2 in sync of min.insync 2
        cluster.restart(2)
        consumer = Consumer(kafka_config(cluster.bootstrap, **{"group.id": unique}))
        consumer.subscribe([unique])
        try:
            values = _read(consumer, 200, timeout_s=60)
        finally:
            consumer.close()
        assert sorted(int(v) for v in values) == list(range(200))


def _produce(producer: Producer, topic: str, numbers: range) -> None:
    failures: list[KafkaException] = []

    def _on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(KafkaException(err))

    for n in numbers:
        producer.produce(topic, str(n).encode(), on_delivery=_on_delivery)
    assert producer.flush(60) == 0
    assert not failures, failures
