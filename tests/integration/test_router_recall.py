"""At least once, a router recalls the requests answered lately from the results topic's tail, so
one a dead router answered but never committed is dropped when it comes back, not answered twice
(``router/recall.py``, docs/delivery.md)."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Producer
from modelyard.broker import create_topics, ensure_pipeline_topics
from modelyard.control import StageRouting
from modelyard.graph import parse_spec
from modelyard.router.recall import AnsweredRecall
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.telemetry.hooks import Hooks, RoutedRequest
from modelyard.topics import audit_topic, pipeline_ingress_topic
from modelyard.wire import Envelope, encode_envelope

from tests.integration.conftest import broker_engine
from tests.support.kafka_io import produce_all
from tests.support.routing import StaticRouting

pytestmark = pytest.mark.integration

SPEC = parse_spec(
    """
pipeline: rc
version: 1
inputs: {text: {datatype: BYTES, shape: [-1]}}
stages:
  only: {model: shout, inputs: {text: request.text}}
outputs: {loud: only.shout}
""",
    "rc.yaml",
)


def test_the_recall_reads_the_last_results_of_each_partition(broker: str, unique: str) -> None:
    create_topics(broker, [unique], partitions=2)
    producer = Producer({"bootstrap.servers": broker})
    for partition in (0, 1):
        for i in range(3):
            producer.produce(unique, b"", f"p{partition}-{i}", partition=partition)
    assert producer.flush(30) == 0
    recalled = AnsweredRecall(broker, unique, per_partition=2).recall()
    # the last two of each; the embedded broker's high watermarks lag, so it reads from further
    # back (all of them here): more ids recalled, never fewer
    assert {"p0-1", "p0-2", "p1-1", "p1-2"} <= set(recalled)
    if broker_engine() == "kafka":
        assert sorted(recalled) == ["p0-1", "p0-2", "p1-1", "p1-2"]


def test_a_missing_results_topic_recalls_nothing(broker: str, unique: str) -> None:
    assert AnsweredRecall(broker, f"{unique}-none", per_partition=10, timeout_s=5).recall() == []


class _Seen(Hooks):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.dropped_redelivered = threading.Event()
        self.finished = threading.Event()

    def route_started(self, request: RoutedRequest) -> None:
        self.started.append(request.request_id)

    def route_finished(self, request: RoutedRequest, outcome: str) -> None:
        self.finished.set()

    def dropped(self, reason: str) -> None:
        if reason == "redelivered request":
            self.dropped_redelivered.set()


def test_a_recalled_request_is_not_routed_again(broker: str, unique: str) -> None:
    ensure_pipeline_topics(broker, unique, "rc", 1)
    create_topics(broker, [audit_topic(unique)])
    hooks = _Seen()
    routing = StaticRouting("rc", only=StageRouting(active="1"))
    # no stage serves this prefix: the new request ends by its deadline, which is an answer too
    options = RouterOptions(bootstrap=broker, prefix=unique, default_timeout_s=1.0)
    router = PipelineRouter(SPEC, routing, options, hooks, recall=lambda: ["answered"])
    router.start()
    try:
        assert router.wait_joined(60)
        ids = ("answered", "new")
        requests: list[tuple[str, bytes, list[tuple[str, bytes]]]] = [
            (rid, encode_envelope(Envelope(rid, {"text": [rid]})), []) for rid in ids
        ]
        produce_all(broker, pipeline_ingress_topic(unique, "rc"), requests)
        assert hooks.dropped_redelivered.wait(60), "the recalled request was not dropped"
        assert hooks.finished.wait(60), "the new request was never answered"
    finally:
        router.stop()
    assert hooks.started == ["new"]
