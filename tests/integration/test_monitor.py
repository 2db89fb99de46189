"""`modelyard monitor` against the real broker: a synthetic audit stream (hop records of two
versions and a shadow, with errors, request and checkpoint records, and a value that is no
record) on two partitions gives window summaries on ``<prefix>.monitor`` that equal the
hand-computed counts, with quantiles within the sketch's relative accuracy; ``monitor show``
prints them. A monitor SIGKILLed before its windows are due restores them from its table's
changelog when restarted, and counts nothing twice once its offsets were committed."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition
from modelyard.audit import encode_audit_values
from modelyard.broker.admin import create_topics
from modelyard.cli.main import cli
from modelyard.monitor.hops import WindowKey
from modelyard.monitor.settings import monitor_group, monitor_topic
from modelyard.monitor.show import read_summaries
from modelyard.monitor.sketch import RELATIVE_ACCURACY
from modelyard.monitor.summary import WindowSummary, combine
from modelyard.monitor.windows import window_start
from modelyard.topics import audit_topic

from tests.support.cli_process import CliProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ACTIVE = WindowKey("docs", "sentiment", "vader", "1", "active")
CANARY = WindowKey("docs", "sentiment", "vader", "2", "canary")
SHADOW = WindowKey("docs", "sentiment", "vader", "3", "shadow")


def _monitor(broker: str, prefix: str, state: Path, **env: str) -> CliProcess:
    """``modelyard monitor`` in a child process, ticking fast, its changelog state in ``state``."""
    env = {**os.environ, "MODELYARD_STATE_DIR": str(state), "MODELYARD_TICK_S": "0.5",
           "MODELYARD_SESSION_TIMEOUT_S": "6", **env}  # fmt: skip
    args = ["monitor", "--bootstrap", broker, "--topic-prefix", prefix]
    return CliProcess(args, "modelyard monitor ready", env)


def _hop(key: WindowKey, n: int, t: float, latency: float, outcome: str,
         agrees: bool | None = None) -> bytes:  # fmt: skip
    return encode_audit_values("hop", {
        "request_id": f"r{n}", "pipeline": key.pipeline, "outcome": outcome, "stage": key.stage,
        "model": key.model, "version": key.version, "role": key.role,
        "shadow": key.role == "shadow", "dispatched_at": t - latency / 1000, "finished_at": t,
        "latency_ms": latency, "input_digest": "00", "agrees": agrees,
    })  # fmt: skip


def _stream(start: float) -> tuple[list[tuple[int, bytes]], dict[WindowKey, list[float]]]:
    """(partition, value) pairs over one closed minute, and the latencies per key."""
    rng = random.Random(3)
    values: list[tuple[int, bytes]] = []
    latencies: dict[WindowKey, list[float]] = {ACTIVE: [], CANARY: [], SHADOW: []}
    for n in range(600):
        key = (ACTIVE, ACTIVE, CANARY, SHADOW)[n % 4]
        latency = rng.lognormvariate(3, 0.8) * (3 if key is CANARY else 1)
        outcome = "deadline" if key is CANARY and n % 20 == 2 else "ok"
        agrees = (n % 12 != 3) if key is SHADOW else None  # every third shadow hop disagrees
        t = start + (n % 590) / 10
        values.append((n % 2, _hop(key, n, t, latency, outcome, agrees)))
        latencies[key].append(latency)
    values.append((0, encode_audit_values("request", {"request_id": "r0", "pipeline": "docs"})))
    values.append((1, b"\xff not a record"))
    return values, latencies


def _produce(broker: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for partition, value in values:
        producer.produce(topic, value, b"k", partition=partition)
        producer.poll(0)
    assert producer.flush(30) == 0


def _windows(broker: str, prefix: str) -> dict[WindowKey, WindowSummary]:
    combined = combine(read_summaries(broker, monitor_topic(prefix), timeout_s=5))
    return {w.key: w for w in combined}


def _exact(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))]


@pytest.mark.slow
def test_monitor_publishes_hand_computed_windows(broker: str, unique: str, tmp_path: Path) -> None:
    create_topics(broker, [audit_topic(unique)], partitions=2)
    start = window_start(time.time(), 60) - 120  # a minute that has closed: emitted at once
    values, latencies = _stream(start)
    _produce(broker, audit_topic(unique), values[:300])  # half before the monitor starts
    monitor = _monitor(broker, unique, tmp_path)
    try:
        monitor.wait_ready(60)
        _produce(broker, audit_topic(unique), values[300:])  # half while it runs
        wait_until(lambda: sum(w.stats.requests for w in _windows(broker, unique).values())
                   == 600, "every hop in a published window", 30)  # fmt: skip
        windows = _windows(broker, unique)
        result = CliRunner().invoke(cli, ["monitor", "show", "docs", "--bootstrap", broker,
                                          "--topic-prefix", unique])  # fmt: skip
    finally:
        assert monitor.end(signal.SIGTERM) == 0, "".join(monitor.lines[-30:])
    assert {k: (w.start, w.stats.requests) for k, w in windows.items()} == {
        ACTIVE: (start, 300),
        CANARY: (start, 150),
        SHADOW: (start, 150),
    }
    assert windows[CANARY].stats.errors == {"deadline": 150 // 5}  # n % 20 == 2 of n % 4 == 2
    assert windows[ACTIVE].stats.errors == {}
    assert (windows[SHADOW].stats.agree, windows[SHADOW].stats.disagree) == (100, 50)
    assert set(windows[ACTIVE].sources) == {f"{audit_topic(unique)}/0", f"{audit_topic(unique)}/1"}
    for key, window in windows.items():
        for q in (0.5, 0.95, 0.99):
            got, want = window.stats.latency.quantile(q), _exact(latencies[key], q)
            assert got is not None
            assert abs(got - want) <= RELATIVE_ACCURACY * want, (key, q, got, want)
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()
    assert rows[0].split()[:3] == ["stage", "version", "role"]
    assert any("vader:2" in r and "canary" in r and "20.0" in r for r in rows[1:]), rows


def _committed(broker: str, prefix: str) -> int:
    """The monitor group's committed offsets on the audit topic, summed."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": monitor_group(prefix)})
    try:
        parts = [TopicPartition(audit_topic(prefix), p) for p in range(2)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def _assert_windows(windows: dict[WindowKey, WindowSummary],
                    latencies: dict[WindowKey, list[float]]) -> None:  # fmt: skip
    assert {k: w.stats.requests for k, w in windows.items()} == {
        ACTIVE: 300,
        CANARY: 150,
        SHADOW: 150,
    }
    for key, window in windows.items():
        got, want = window.stats.latency.quantile(0.99), _exact(latencies[key], 0.99)
        assert got is not None
        assert abs(got - want) <= RELATIVE_ACCURACY * want, (key, got, want)


@pytest.mark.slow
def test_a_killed_monitor_restores_its_windows_from_the_changelog(
    broker: str, unique: str, tmp_path: Path
) -> None:
    create_topics(broker, [audit_topic(unique)], partitions=2)
    start = window_start(time.time(), 60) - 120
    values, latencies = _stream(start)
    _produce(broker, audit_topic(unique), values)
    # the window falls due 30 s from now: after the kill and the restart
    grace = {"MODELYARD_GRACE_S": str(time.time() + 30 - (start + 60))}
    first = _monitor(broker, unique, tmp_path, **grace)
    try:
        first.wait_ready(60)
        wait_until(lambda: _committed(broker, unique) == len(values),
                   "the first monitor's offsets committed", 30)  # fmt: skip
    finally:
        assert first.end(signal.SIGKILL) == -signal.SIGKILL
    assert _windows(broker, unique) == {}  # nothing published yet: all of it is in the table
    second = _monitor(broker, unique, tmp_path, **grace)
    try:
        second.wait_ready(60)
        # partial summaries land one key and partition at a time: wait for all of them (or
        # more, which the exact counts below then refuse)
        wait_until(lambda: sum(w.stats.requests for w in _windows(broker, unique).values())
                   >= 600, "the restored windows", 90)  # fmt: skip
        _assert_windows(_windows(broker, unique), latencies)
    finally:
        assert second.end(signal.SIGTERM) == 0, "".join(second.lines[-30:])
