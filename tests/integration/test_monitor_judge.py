"""The monitor's judge against the real broker and control topic: a sentiment canary that
answers "positive" to everything (and one that is three times slower) is flagged in the first
window it is judged in and withdrawn by its stage's guard, in a control record the monitor's
writer key signs; an identical canary is judged and left alone; labels submitted with
`modelyard label` give each version's accuracy; a signed baseline is what the active version
is judged against.

The audit stream is synthetic (hop records as the router writes them, with observed values) and
lies in a window that has already closed, so the test does not wait for the clock.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from modelyard.audit import encode_audit_values
from modelyard.broker.admin import create_topics
from modelyard.cli.main import cli
from modelyard.control import CanaryChange, ControlRecord, ControlState, GuardsChange, Rollout
from modelyard.control.follower import ControlFollower
from modelyard.control.routing import GuardRule
from modelyard.control.topic import write_change
from modelyard.monitor.hops import WindowKey
from modelyard.monitor.settings import monitor_topic
from modelyard.monitor.show import read_assessments
from modelyard.monitor.summary import iso
from modelyard.monitor.windows import window_start
from modelyard.topics import audit_topic

from tests.support.cli_process import CliProcess
from tests.support.keys import admin, verifier, writer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW_S = 10.0
LABELS = ("positive", "neutral", "negative")
RULES = (
    GuardRule(metric="drift_psi", max=0.25, min_requests=50),
    GuardRule(metric="p99_latency_ratio", max=2.0, min_requests=50),
)


def _route(broker: str, prefix: str, pipeline: str) -> None:
    for change in (
        Rollout(stage="sentiment", version="1"),
        CanaryChange(stage="sentiment", version="2", weight=0.3),
        GuardsChange(stage="sentiment", rules=RULES),
    ):
        write_change(broker, pipeline, change, signer=admin(), prefix=prefix)


def _hops(
    pipeline: str, start: float, canary: str
) -> tuple[list[tuple[str, bytes]], dict[str, tuple[str, str]]]:
    """300 active and 150 canary sentiment hops in the window from ``start``; ``canary``:
    ``same`` (drawn like the active), ``positive`` (always positive) or ``slow`` (3x latency).
    Keyed by request id, as the router keys them. Also what each request was answered, by
    whom: request id -> (version, label)."""
    rng = random.Random(pipeline)
    values: list[tuple[str, bytes]] = []
    answered: dict[str, tuple[str, str]] = {}
    for n in range(450):
        version = "2" if n % 3 == 2 else "1"
        label = rng.choice(LABELS)
        latency = rng.lognormvariate(3, 0.3)
        if version == "2" and canary == "positive":
            label = "positive"
        if version == "2" and canary == "slow":
            latency *= 3
        request = f"{pipeline}-{n}"
        values.append((request, encode_audit_values("hop", {
            "request_id": request, "pipeline": pipeline, "outcome": "ok", "stage": "sentiment",
            "model": "vader", "version": version, "role": "canary" if version == "2" else "active",
            "shadow": False, "dispatched_at": start + n / 100 - latency / 1000,
            "finished_at": start + n / 100, "latency_ms": latency, "input_digest": "00",
            "observed": {"label": label, "scores.0": rng.random(), "input.text": 40.0 + n % 7},
        })))  # fmt: skip
        answered[request] = (version, label)
    return values, answered


def _produce(broker: str, topic: str, values: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for key, value in values:
        producer.produce(topic, value, key.encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def _monitor(broker: str, prefix: str, state: Path) -> CliProcess:
    env = {**os.environ, "MODELYARD_STATE_DIR": str(state), "MODELYARD_TICK_S": "0.5",
           "MODELYARD_GRACE_S": "1", "MODELYARD_SETTLE_S": "1",
           "MODELYARD_SESSION_TIMEOUT_S": "6"}  # fmt: skip
    args = ["monitor", "--bootstrap", broker, "--topic-prefix", prefix, "--window-s",
            str(WINDOW_S), "--writer-key", os.environ["MODELYARD_WRITER_KEY"]]  # fmt: skip
    return CliProcess(args, "modelyard monitor ready", env)


def _judged(broker: str, prefix: str) -> dict[tuple[WindowKey, str], dict[str, Any]]:
    return read_assessments(broker, monitor_topic(prefix), timeout_s=5)


def _canary(state: ControlState, pipeline: str) -> str | None:
    canary = state.stage(pipeline, "sentiment").canary
    return canary.version if canary is not None else None


def test_a_drifting_or_slow_canary_is_withdrawn_and_an_identical_one_is_not(
    broker: str, unique: str, tmp_path: Path
) -> None:
    create_topics(broker, [audit_topic(unique)], partitions=2)
    kinds = {"drifts": "positive", "slows": "slow", "calm": "same"}
    for pipeline in kinds:
        _route(broker, unique, pipeline)
    start = window_start(time.time(), WINDOW_S) - 3 * WINDOW_S  # closed: judged at once
    for pipeline, kind in kinds.items():
        _produce(broker, audit_topic(unique), _hops(pipeline, start, kind)[0])
    records: list[ControlRecord] = []
    follower = ControlFollower(
        broker, prefix=unique, verifier=verifier(), on_change=records.append
    ).start()
    monitor = _monitor(broker, unique, tmp_path)
    try:
        monitor.wait_ready(60)
        assert follower.wait_until(
            lambda s: _canary(s, "drifts") is None and _canary(s, "slows") is None, 60
        ), "".join(monitor.lines[-30:])
        judged = _judged(broker, unique)
        calm = judged[(WindowKey("calm", "sentiment", "vader", "2", "canary"), iso(start))]
        assert calm["reference"] == "active vader:1"
        assert not calm["drifted"], calm
        assert {d["field"] for d in calm["drift"]} == {"label", "scores.0", "input.text"}
        assert _canary(follower.state, "calm") == "2"  # judged, and left alone
        drifts = judged[(WindowKey("drifts", "sentiment", "vader", "2", "canary"), iso(start))]
        assert drifts["drifted"]
        assert next(d for d in drifts["drift"] if d["field"] == "label")["drifted"]
        slows = judged[(WindowKey("slows", "sentiment", "vader", "2", "canary"), iso(start))]
        assert slows["p99_ratio"] > 2.0
        assert not slows["drifted"]
    finally:
        follower.stop()
        assert monitor.end(signal.SIGTERM) == 0, "".join(monitor.lines[-30:])
    reasons = {r.key: r.reason for r in records if r.change.type == "withdraw"}
    assert set(reasons) == {"drifts", "slows"}
    assert "drift_psi" in reasons["drifts"]
    assert "reference active vader:1" in reasons["drifts"]
    assert "p99_latency_ratio" in reasons["slows"]
    withdrawals = [r for r in records if r.change.type == "withdraw"]
    assert {r.actor for r in withdrawals} == {writer().name}  # signed by the monitor's key


def test_labels_give_each_versions_accuracy_and_a_baseline_judges_the_active(
    broker: str, unique: str, tmp_path: Path
) -> None:
    create_topics(broker, [audit_topic(unique)], partitions=2)
    _route(broker, unique, "docs")
    start = window_start(time.time(), WINDOW_S) - 3 * WINDOW_S
    values, answered = _hops("docs", start, "positive")
    _produce(broker, audit_topic(unique), values)
    monitor = _monitor(broker, unique, tmp_path)
    runner = CliRunner()
    try:
        monitor.wait_ready(60)
        key = (WindowKey("docs", "sentiment", "vader", "1", "active"), iso(start))
        wait_until(lambda: key in _judged(broker, unique), "the first window judged", 30)
        saved = runner.invoke(cli, ["monitor", "baseline", "save", "docs", "--bootstrap", broker,
                                    "--topic-prefix", unique])  # fmt: skip
        assert saved.exit_code == 0, saved.output
        assert "sentiment: vader:1, 300 requests" in saved.output
        # the truth: the active version's answer for 3 in 4 of its requests, "negative" for
        # every canary request (it answered "positive" to all)
        wanted = {}
        for n, (request, (version, label)) in enumerate(sorted(answered.items())[:120]):
            truth = "negative" if version == "2" else (label if n % 4 else _other(label))
            wanted[request] = truth
            args = ["label", request, "sentiment", truth, "--bootstrap", broker,
                    "--topic-prefix", unique]  # fmt: skip
            result = runner.invoke(cli, args)
            assert result.exit_code == 0, result.output
        labelled = time.time()
        later = window_start(labelled, WINDOW_S)
        active = (WindowKey("docs", "sentiment", "vader", "1", "active"), iso(later))
        canary = (WindowKey("docs", "sentiment", "vader", "2", "canary"), iso(later))
        wait_until(lambda: {active, canary} <= _judged(broker, unique).keys()
                   or window_start(time.time(), WINDOW_S) > later + 2 * WINDOW_S,
                   "the labels' window judged", 60)  # fmt: skip
        judged = _judged(broker, unique)
        shown = runner.invoke(cli, ["monitor", "show", "docs", "--bootstrap", broker,
                                    "--topic-prefix", unique])  # fmt: skip
    finally:
        assert monitor.end(signal.SIGTERM) == 0, "".join(monitor.lines[-30:])
    # labels may straddle two windows: add them up
    figures = {k: v for k, v in judged.items() if k[1] >= iso(later - WINDOW_S) and v["accuracy"]
               is not None}  # fmt: skip
    assert figures, judged.keys()
    by_version: dict[str, list[float]] = {}
    for (window_key, _), record in figures.items():
        by_version.setdefault(window_key.version, []).append(record["accuracy"])
    active_requests = [r for r in wanted if answered[r][0] == "1"]
    right = sum(answered[r][1] == wanted[r] for r in active_requests) / len(active_requests)
    assert min(by_version["1"]) <= right <= max(by_version["1"])
    assert by_version["2"] == [0.0] * len(by_version["2"])  # "positive" was never right
    baseline = judged[active]
    assert baseline["reference"] == "baseline vader:1", [  # saved, signed, followed
        line for line in monitor.lines if "baseline" in line
    ]
    assert shown.exit_code == 0, shown.output
    assert any("vader:2" in row and "0%" in row for row in shown.output.splitlines()), shown.output


def _other(label: str) -> str:
    return LABELS[(LABELS.index(label) + 1) % len(LABELS)]
