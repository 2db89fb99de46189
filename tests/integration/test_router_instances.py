"""Two router instances share one pipeline through the consumer group, on the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Message
from modelyard.broker import ensure_pipeline_topics
from modelyard.control import StageRouting
from modelyard.graph import parse_spec
from modelyard.repository.build import BuildContext
from modelyard.router.live import LiveRequest
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.telemetry.hooks import Hooks
from modelyard.topics import pipeline_ingress_topic, pipeline_results_topic
from modelyard.wire import Envelope, decode_envelope, encode_envelope

from tests.support.kafka_io import Collector, produce_all
from tests.support.models import write_shout_version
from tests.support.routing import StaticRouting
from tests.support.stage import StageProcess

pytestmark = pytest.mark.integration

PARTITIONS = 4
SPEC = parse_spec(
    """
pipeline: tp
version: 1
inputs: {text: {datatype: BYTES, shape: [-1]}}
stages:
  first: {model: shout, inputs: {text: request.text}}
  second: {model: shout, inputs: {text: first.shout}}
outputs: {loud: second.shout}
"""
)


@pytest.fixture
def setting(broker: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    write_shout_version(BuildContext(root=tmp_path, cache=tmp_path / ".cache"), "1")
    prefix = f"ri-{uuid.uuid4().hex[:8]}"
    ensure_pipeline_topics(broker, prefix, "tp", PARTITIONS)
    stage = StageProcess(
        "shout:1", tmp_path, "--bootstrap", broker, "--topic-prefix", prefix, "--no-grpc"
    )
    try:
        stage.wait_ready(60)
        yield broker, prefix
    finally:
        stage.terminate()


def _results(broker: str, prefix: str, ids: set[str]) -> dict[str, list[Envelope]]:
    collector = Collector(broker, pipeline_results_topic(prefix, "tp"), PARTITIONS)

    def have(ms: list[Message]) -> bool:
        return ids <= {m.key().decode() for m in ms}

    try:
        messages = collector.until(have, 90)
    finally:
        collector.close()
    found: dict[str, list[Envelope]] = {}
    for m in messages:
        if m.key().decode() in ids:
            found.setdefault(m.key().decode(), []).append(decode_envelope(m.value()))
    return found


def _send(broker: str, prefix: str, ids: list[str]) -> None:
    records = [(rid, encode_envelope(Envelope(rid, {"text": [rid]})), []) for rid in ids]
    produce_all(broker, pipeline_ingress_topic(prefix, "tp"), records)


class Routed(Hooks):
    """Which requests one instance routed, through the router's hook seam."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def route_finished(self, live: LiveRequest, outcome: str) -> None:
        self.ids.add(live.request_id)


def _assigned(router: PipelineRouter) -> set[tuple[str, int]]:
    return router.partitions


def test_two_routers_split_the_partitions_and_every_request_is_answered(
    setting: tuple[str, str],
) -> None:
    broker, prefix = setting
    routing = StaticRouting("tp", first=StageRouting(active="1"), second=StageRouting(active="1"))
    options = RouterOptions(bootstrap=broker, prefix=prefix)
    seen = Routed(), Routed()
    one, two = (PipelineRouter(SPEC, routing, options, hooks) for hooks in seen)
    try:
        one.start()
        assert one.wait_joined(60)
        _send(broker, prefix, ids := [f"solo-{i}" for i in range(50)])
        assert all(len(r) >= 1 for r in _results(broker, prefix, set(ids)).values())
        two.start()
        assert two.wait_joined(60)
        # ingress and inbox partition p always belong to the same instance (range assignor)
        for router in (one, two):
            owned = _assigned(router)
            ingress = {p for t, p in owned if t.endswith(".in")}
            assert ingress == {p for t, p in owned if t.endswith(".router")}
        _send(broker, prefix, ids := [f"pair-{i}" for i in range(200)])
        results = _results(broker, prefix, set(ids))
        assert set(results) == set(ids)
        assert all(r[0].error is None for r in results.values())
        assert {r[0].served_by["second"] for r in results.values()} == {"shout:1"}
        pair = set(ids)
        assert seen[0].ids & pair  # both instances routed some of them: the work is shared
        assert seen[1].ids & pair
    finally:
        two.stop()
        one.stop()
    assert one.failure is None
    assert two.failure is None
