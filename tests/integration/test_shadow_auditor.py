"""The shadow auditor on the real broker: what it commits lets a successor pair what it held."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from modelyard.audit import HopRecord, decode_audit
from modelyard.broker import create_topics
from modelyard.shadows.auditor import ShadowAuditor
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
