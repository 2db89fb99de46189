"""The shadow auditor on the real broker: what it commits lets a successor pair what it held,
and a shadow version that disagrees too often is withdrawn through the control topic."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from modelyard.audit import HopRecord, decode_audit
from modelyard.broker import create_topics
from modelyard.control import (
    CanaryChange,
    ControlRecord,
    ControlState,
    GuardRule,
    GuardsChange,
    Rollout,
    ShadowChange,
)
from modelyard.control.follower import ControlFollower
from modelyard.control.topic import ensure_control_topic, read_records, write_change
from modelyard.shadows.auditor import ShadowAuditor
from modelyard.shadows.guard import ShadowGuard, withdrawing_guard
from modelyard.topics import audit_topic, pipeline_shadow_topic
from modelyard.wire import Envelope, encode_envelope

from tests.support.cli_process import CliProcess
from tests.support.kafka_io import Collector, produce_all
from tests.support.keys import admin, verifier, writer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

Record = tuple[str, bytes, list[tuple[str, bytes]]]


def _side(request_id: str, role: str, label: str = "pos") -> Record:
    """A reply on the shadow topic: the router's copy of the primary, or the shadow's own."""
    version = "2" if role == "shadow" else "1"
    reply = Envelope(request_id, {"label": [label]}, "tp", "sentiment", model="m", version=version)
    sent_at = b"%f" % time.time()
    primary = [("shadow-role", b"primary"), ("shadow-version", b"m:2"), ("shadow-sent-at", sent_at)]
    headers = [("shadow", b"1")] if role == "shadow" else primary
    return request_id, encode_envelope(reply), headers


def _shadow_hops(broker: str, prefix: str, wanted: set[str]) -> list[HopRecord]:
    def hops(messages: list[Message]) -> list[HopRecord]:
        records = (decode_audit(m.value()) for m in messages)
        return [r for r in records if isinstance(r, HopRecord) and r.shadow]

    collector = Collector(broker, audit_topic(prefix))
    try:
        found = collector.until(lambda ms: wanted <= {h.request_id for h in hops(ms)}, 60)
        return hops(found)
    finally:
        collector.close()


def _committed(broker: str, group: str, topic: str) -> int:
    """The group's committed offset on partition 0 (read without joining the group)."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": group})
    try:
        return int(consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)
    finally:
        consumer.close()


def _wait(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    wait_until(condition, "the condition", timeout_s)


def test_a_half_pair_held_when_the_auditor_stops_is_paired_by_the_next(
    broker: str, unique: str
) -> None:
    shadow_topic = pipeline_shadow_topic(unique, "tp")
    create_topics(broker, [shadow_topic, audit_topic(unique)], partitions=1)
    # a complete pair, then the primary half of a pair whose shadow reply is still to come
    produce_all(broker, shadow_topic, [_side("done", "primary"), _side("done", "shadow")])
    produce_all(broker, shadow_topic, [_side("held", "primary")])

    first = ShadowAuditor(broker, "tp", prefix=unique, ttl_s=600)  # nothing expires here
    first.start()
    try:
        assert first.wait_joined(60)
        assert [h.request_id for h in _shadow_hops(broker, unique, {"done"})] == ["done"]
        _wait(lambda: first.waiting == 1)  # "held" read and waiting
        # committed at "held"'s own offset (2), not past it as the position (3) would be
        _wait(lambda: _committed(broker, f"{unique}.g.p.tp.shadow-audit", shadow_topic) == 2)
    finally:
        first.stop()
    assert first.failure is None

    produce_all(broker, shadow_topic, [_side("held", "shadow")])
    second = ShadowAuditor(broker, "tp", prefix=unique, ttl_s=600)
    second.start()
    try:
        hops = _shadow_hops(broker, unique, {"done", "held"})
    finally:
        second.stop()
    assert second.failure is None
    held = [h for h in hops if h.request_id == "held"]
    assert [(h.outcome, h.agrees, h.version) for h in held] == [("ok", True, "2")]
    assert [h.request_id for h in hops].count("done") == 1  # before the floor: not read again


GUARDED_SPEC = """\
pipeline: tp
version: 1
inputs: {text: {datatype: BYTES, shape: [1]}}
stages:
  sentiment: {model: sentiment, inputs: {text: request.text}}
outputs: {label: sentiment.label}
"""


def _guarded_sentiment(broker: str, prefix: str) -> str:
    """Stage tp/sentiment: 1 active, 3 canary, 2 shadow with a disagreement guard (2 of 3 runs
    disagreeing trips it); returns the pipeline's shadow topic."""
    shadow_topic = pipeline_shadow_topic(prefix, "tp")
    create_topics(broker, [shadow_topic, audit_topic(prefix)], partitions=1)
    rule = GuardRule(metric="shadow_disagreement", max=0.5, window_s=60, min_requests=3)
    for change in (
        Rollout(stage="sentiment", version="1"),
        CanaryChange(stage="sentiment", version="3", weight=0.1),
        ShadowChange(stage="sentiment", version="2", sample_rate=1.0),
        GuardsChange(stage="sentiment", rules=(rule,)),
    ):
        write_change(broker, "tp", change, signer=admin(), prefix=prefix)
    return shadow_topic


def _send_mostly_disagreeing_pairs(broker: str, shadow_topic: str) -> None:
    pairs = [(f"r{i}", "pos", "neg" if i else "pos") for i in range(4)]  # r0 agrees
    for rid, primary, shadow in pairs:
        produce_all(broker, shadow_topic, [_side(rid, "primary", primary)])
        produce_all(broker, shadow_topic, [_side(rid, "shadow", shadow)])


def _withdrawn(state: ControlState) -> bool:
    return state.pipeline("tp").seq == 5  # the four changes above, then the guard's


def _assert_withdrawn_by_the_guard(last: ControlRecord) -> None:
    assert (last.actor, last.change.type) == (writer().name, "withdraw")  # its writer key
    # tripped on the third compared run: 2 of 3 disagree
    assert (
        "shadow sentiment 2 shadow_disagreement 0.667 > 0.5 over 60 s (3 requests)" in last.reason
    )
    stage = last.state.stage("sentiment")
    assert stage.shadow is None
    assert stage.active == "1"
    assert stage.canary is not None
    assert stage.canary.version == "3"  # another version's canary is left alone


def test_a_shadow_that_disagrees_past_its_guard_is_withdrawn(broker: str, unique: str) -> None:
    shadow_topic = _guarded_sentiment(broker, unique)
    records: list[ControlRecord] = []
    follower = ControlFollower(
        broker, prefix=unique, on_change=records.append, verifier=verifier()
    ).start()
    guard = withdrawing_guard(
        broker, "tp", lambda: follower.state, prefix=unique, signer=writer(), verifier=verifier()
    )
    auditor = ShadowAuditor(broker, "tp", prefix=unique, ttl_s=600, guard=guard)
    try:
        assert follower.wait_caught_up(30)
        auditor.start()
        _send_mostly_disagreeing_pairs(broker, shadow_topic)
        assert follower.wait_until(_withdrawn, 60)
    finally:
        auditor.stop()
        guard.join()
        follower.stop()
    assert auditor.failure is None
    _assert_withdrawn_by_the_guard(records[-1])


def test_the_shadow_audit_command_enforces_the_guard(
    broker: str, unique: str, tmp_path: Path
) -> None:
    shadow_topic = _guarded_sentiment(broker, unique)
    spec = tmp_path / "tp.yaml"
    spec.write_text(GUARDED_SPEC)
    cmd = [sys.executable, "-m", "modelyard.cli.main", "shadow-audit", str(spec),
           "--bootstrap", broker, "--topic-prefix", unique]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()  # drains the pipe for as long as the command runs
    try:
        _wait(lambda: any(line.startswith("modelyard shadow-audit ready") for line in lines), 60)
        _send_mostly_disagreeing_pairs(broker, shadow_topic)
        with ControlFollower(broker, prefix=unique) as follower:
            withdrawn = follower.wait_until(_withdrawn, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert withdrawn, "not withdrawn in 60 s; the auditor said:\n" + "".join(lines[-40:])
    assert code == 0, "".join(lines[-30:])
    _assert_withdrawn_by_the_guard(read_records(broker, prefix=unique)[-1].record)


# faults --------------------------------------------------------------------------------------
def _breakable_guard(broken: threading.Event) -> ShadowGuard:
    """A guard whose routing lookup raises once ``broken`` is set: a handler error mid-stream."""

    def routing() -> ControlState:
        if broken.is_set():
            raise RuntimeError("the guard broke")
        return ControlState()

    return ShadowGuard("tp", routing, lambda trip: None)


def test_an_auditor_that_fails_commits_nothing_from_the_failed_pair_on(
    broker: str, unique: str
) -> None:
    shadow_topic, group = pipeline_shadow_topic(unique, "tp"), f"{unique}.g.p.tp.shadow-audit"
    create_topics(broker, [shadow_topic, audit_topic(unique)], partitions=1)
    produce_all(broker, shadow_topic, [_side("a", "primary"), _side("a", "shadow")])
    broken = threading.Event()
    first = ShadowAuditor(broker, "tp", prefix=unique, ttl_s=600, guard=_breakable_guard(broken))
    first.start()
    try:
        assert first.wait_joined(60)
        _wait(lambda: _committed(broker, group, shadow_topic) == 2)  # "a" recorded and committed
        broken.set()
        produce_all(broker, shadow_topic, [_side("b", "primary"), _side("b", "shadow")])
        assert first.join(60)  # stopped by itself, on the failure
    finally:
        first.stop()
    assert isinstance(first.failure, RuntimeError)
    # "b" (offsets 2 and 3) failed: nothing from it on is committed, so the next reads it again
    assert _committed(broker, group, shadow_topic) == 2

    second = ShadowAuditor(broker, "tp", prefix=unique, ttl_s=600)
    second.start()
    try:
        _wait(lambda: _committed(broker, group, shadow_topic) == 4, 60)
        hops = _shadow_hops(broker, unique, {"a", "b"})
    finally:
        second.stop()
    assert second.failure is None
    assert [h.request_id for h in hops].count("a") == 1  # before the commit: not read again
    assert {(h.outcome, h.agrees) for h in hops if h.request_id == "b"} == {("ok", True)}


def _audit_command(broker: str, prefix: str, spec: Path) -> CliProcess:
    args = ["shadow-audit", str(spec), "--bootstrap", broker, "--topic-prefix", prefix,
            "--ttl-s", "600"]  # fmt: skip
    return CliProcess(args, "modelyard shadow-audit ready")


def test_an_auditor_killed_holding_halves_loses_no_pair(
    broker: str, unique: str, tmp_path: Path
) -> None:
    total, group = 300, f"{unique}.g.p.tp.shadow-audit"
    shadow_topic = pipeline_shadow_topic(unique, "tp")
    create_topics(broker, [shadow_topic, audit_topic(unique)], partitions=1)
    ensure_control_topic(broker, unique)  # the command reads it to its end before any reply
    spec = tmp_path / "tp.yaml"
    spec.write_text(GUARDED_SPEC)
    ids = [f"r{i}" for i in range(total)]
    # every primary (offsets 0..total-1), then the shadows of the first half: the second half's
    # primaries are held, in the auditor's memory only, when it is killed
    produce_all(broker, shadow_topic, [_side(rid, "primary") for rid in ids])
    produce_all(broker, shadow_topic, [_side(rid, "shadow") for rid in ids[: total // 2]])
    child = _audit_command(broker, unique, spec)
    try:
        child.wait_ready(60)
        _shadow_hops(broker, unique, set(ids[: total // 2]))
        # committed up to the oldest held half, and no further
        _wait(lambda: _committed(broker, group, shadow_topic) == total // 2, 60)
    finally:
        assert child.end(signal.SIGKILL) == -signal.SIGKILL

    produce_all(broker, shadow_topic, [_side(rid, "shadow") for rid in ids[total // 2 :]])
    restart = ShadowAuditor(broker, "tp", prefix=unique, ttl_s=600)
    restart.start()
    try:
        hops = _shadow_hops(broker, unique, set(ids))
    finally:
        restart.stop()
    assert restart.failure is None
    paired = {h.request_id for h in hops if (h.outcome, h.agrees) == ("ok", True)}
    assert paired == set(ids)  # every pair recorded whole: no half was lost with the process
