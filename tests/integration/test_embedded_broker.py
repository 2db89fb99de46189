"""The embedded broker: readiness, a real round trip, clean stop, and `modelyard broker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from modelyard.broker import BrokerStartError, EmbeddedBroker, create_topics, wait_for_kafka

from tests.integration.conftest import kafka_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_broker_answers_metadata(broker: str) -> None:
    wait_for_kafka(broker, timeout_s=5)


def test_round_trip_keeps_key_value_and_headers(broker: str, unique: str) -> None:
    create_topics(broker, [unique], partitions=1)
    create_topics(broker, [unique], partitions=1)  # idempotent
    producer = Producer(kafka_config(broker, producer=True))
    headers = [("reply-to", b"x.out"), ("bin", b"\x00\xff"), ("reply-to", b"dup")]
    producer.produce(unique, b"payload", b"k1", headers=headers)
    assert producer.flush(10) == 0
    consumer = Consumer(kafka_config(broker, **{"group.id": unique}))
    consumer.subscribe([unique])
    try:
        msg = _first_message(consumer, timeout_s=30)
    finally:
        consumer.close()
    assert (msg.key(), msg.value()) == (b"k1", b"payload")
    assert msg.headers() == headers


def _first_message(consumer: Consumer, timeout_s: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            return msg
    raise AssertionError("no message within the timeout")


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    embedded = EmbeddedBroker(log_file=tmp_path / "b.log").start()
    pid = embedded.pid
    assert pid is not None
    assert embedded.running
    embedded.stop()
    embedded.stop()  # idempotent
    assert not embedded.running
    assert not _alive(pid)
    assert "tansu" in (tmp_path / "b.log").read_text()


def test_port_in_use_is_a_clear_error(broker: str) -> None:
    port = int(broker.rsplit(":", 1)[1])
    with pytest.raises(BrokerStartError, match="already in use"):
        EmbeddedBroker(port=port).start()


def test_cli_prints_bootstrap_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelyard.cli.broker", "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()  # the broker is ready before this line is printed
        assert first.startswith("bootstrap=127.0.0.1:"), first
        wait_for_kafka(first.removeprefix("bootstrap="), timeout_s=5)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, rest
        assert "stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
