"""The shadow auditor on the real broker: what it commits lets a successor pair what it held,
and a shadow version that disagrees too often is withdrawn through the control topic."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from modelyard.audit import HopRecord, decode_audit
from modelyard.broker import create_topics
from modelyard.control import (
    CanaryChange,
    ControlRecord,
    GuardRule,
    GuardsChange,
    Rollout,
    ShadowChange,
)
from modelyard.control.follower import ControlFollower
from modelyard.control.topic import write_change
from modelyard.shadows.auditor import ShadowAuditor
from modelyard.shadows.guard import withdrawing_guard
from modelyard.topics import audit_topic, pipeline_shadow_topic
from modelyard.wire import Envelope, encode_envelope

from tests.support.kafka_io import Collector, produce_all

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
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


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


def test_a_shadow_that_disagrees_past_its_guard_is_withdrawn(broker: str, unique: str) -> None:
    shadow_topic = pipeline_shadow_topic(unique, "tp")
    create_topics(broker, [shadow_topic, audit_topic(unique)], partitions=1)
    rule = GuardRule(metric="shadow_disagreement", max=0.5, window_s=60, min_requests=3)
    for change in (
        Rollout(stage="sentiment", version="1"),
        CanaryChange(stage="sentiment", version="3", weight=0.1),
        ShadowChange(stage="sentiment", version="2", sample_rate=1.0),
        GuardsChange(stage="sentiment", rules=(rule,)),
    ):
        write_change(broker, "tp", change, actor="test", prefix=unique)
    records: list[ControlRecord] = []
    follower = ControlFollower(broker, prefix=unique, on_change=records.append).start()
    guard = withdrawing_guard(broker, "tp", lambda: follower.state, prefix=unique)
    auditor = ShadowAuditor(broker, "tp", prefix=unique, ttl_s=600, guard=guard)
    try:
        assert follower.wait_caught_up(30)
        auditor.start()
        pairs = [(f"r{i}", "pos", "neg" if i else "pos") for i in range(4)]  # r0 agrees
        for rid, primary, shadow in pairs:
            produce_all(broker, shadow_topic, [_side(rid, "primary", primary)])
            produce_all(broker, shadow_topic, [_side(rid, "shadow", shadow)])
        assert follower.wait_until(lambda s: s.stage("tp", "sentiment").shadow is None, 60)
    finally:
        auditor.stop()
        guard.join()
        follower.stop()
    assert auditor.failure is None
    last = records[-1]
    assert (last.actor, last.change.type) == ("shadow-audit:guard", "withdraw")
    # tripped on the third compared run: 2 of 3 disagree
    assert (
        "shadow sentiment 2 shadow_disagreement 0.667 > 0.5 over 60 s (3 requests)" in last.reason
    )
    stage = last.state.stage("sentiment")
    assert stage.active == "1"
    assert stage.canary is not None
    assert stage.canary.version == "3"  # another version's canary is left alone
