"""The router's faults on the real broker, on the one worker loop: a router process SIGKILLed
mid-stream loses no request (its successor in the group answers every one), and a router that
stops on a failure commits nothing from the failed request on."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from modelyard.broker import create_topics
from modelyard.control import Rollout, StageRouting
from modelyard.control.topic import write_change
from modelyard.graph import parse_spec
from modelyard.router.live import LiveRequest
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.telemetry.hooks import Hooks
from modelyard.topics import (
    audit_topic,
    model_input_topic,
    pipeline_dlq_topic,
    pipeline_inbox_topic,
    pipeline_ingress_topic,
    pipeline_results_topic,
    pipeline_shadow_topic,
    router_group,
)
from modelyard.wire import Envelope, encode_envelope

from tests.support.kafka_io import Collector, produce_all
from tests.support.keys import admin
from tests.support.routing import StaticRouting
from tests.support.stage import RouterProcess, StageProcess
from tests.support.two_stage import SPEC_TEXT, write_repository

pytestmark = pytest.mark.integration

SPEC = parse_spec(SPEC_TEXT, "tf.yaml")


@dataclass
class Setting:
    bootstrap: str
    prefix: str
    root: Path


@pytest.fixture(scope="module")
def setting(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setting]:
    """One `modelyard serve shout:1` serving both stages of pipeline ``tf``."""
    root = write_repository(Path(tmp_path_factory.mktemp("models")))
    prefix = f"rf-{uuid.uuid4().hex[:8]}"
    stage = StageProcess("shout:1", root, "--bootstrap", broker, "--topic-prefix", prefix,
                         "--no-grpc")  # fmt: skip
    try:
        stage.wait_ready(60)
        yield Setting(broker, prefix, root)
    finally:
        stage.terminate()


def _requests(ids: Sequence[str]) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    return [(rid, encode_envelope(Envelope(rid, {"text": [rid]})), []) for rid in ids]


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        return int(tp.offset)
    finally:
        consumer.close()


# a kill ------------------------------------------------------------------------------------
def test_a_router_killed_mid_stream_loses_no_request(setting: Setting, tmp_path: Path) -> None:
    total, prefix, broker = 1500, setting.prefix, setting.bootstrap
    for stage in ("first", "second"):
        write_change(broker, "tf", Rollout(stage=stage, version="1"), signer=admin(), prefix=prefix)
    args = (str(setting.root / "tf.yaml"), setting.root, "--bootstrap", broker,
            "--topic-prefix", prefix, "--partitions", "2", "--no-grpc",
            "--state-dir", str(tmp_path))  # fmt: skip
    results = Collector(broker, pipeline_results_topic(prefix, "tf"), 2)
    first = RouterProcess(*args)
    try:
        first.wait_ready(90)
        ids = [f"k-{i}" for i in range(total)]
        produce_all(broker, pipeline_ingress_topic(prefix, "tf"), _requests(ids))
        results.until(lambda m: len(m) >= 100, 60)  # routing, and far from done
    finally:
        first.kill()  # SIGKILL
    before = {m.key() for m in results.messages}
    successor = RouterProcess(*args)  # the same group: it takes the dead one's partitions
    try:
        successor.wait_ready(90)
        wanted = {rid.encode() for rid in ids}
        results.until(lambda m: wanted <= {x.key() for x in m}, 120)
    finally:
        code = successor.terminate()
        results.close()
    assert code == 0, "\n".join(successor.lines[-20:])
    assert len(before) < total  # it really died mid-stream


# a failure ---------------------------------------------------------------------------------
class _Fatal(BaseException):
    """Not an ``Exception``: no per-message guard catches it, so the router stops on it."""


class _FailOn(Hooks):
    """Stops the router on the request ``fatal``; tells when offset ``k`` was committed."""

    def __init__(self, ingress: str, k: int) -> None:
        self.ingress, self.k, self.reached = ingress, k, threading.Event()

    def route_started(self, request: LiveRequest) -> None:
        if request.request_id == "fatal":
            raise _Fatal("the router broke")

    def committed(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        if any(t == self.ingress and o >= self.k for t, _, o in offsets):
            self.reached.set()


def test_a_router_that_fails_commits_nothing_from_the_failed_request_on(
    setting: Setting,
) -> None:
    k, prefix, broker = 20, f"{setting.prefix}-f", setting.bootstrap
    ingress = pipeline_ingress_topic(prefix, "tf")
    pipeline_topics = (pipeline_inbox_topic, pipeline_results_topic, pipeline_shadow_topic,
                       pipeline_dlq_topic)  # fmt: skip
    others = [audit_topic(prefix), model_input_topic(prefix, "shout", "1")]
    create_topics(broker, [ingress, *(topic(prefix, "tf") for topic in pipeline_topics), *others])
    routing = StaticRouting("tf", first=StageRouting(active="1"), second=StageRouting(active="1"))
    hooks = _FailOn(ingress, k)
    # the stage serves its own prefix: dispatches of this one go to a topic nobody reads, so
    # the requests finish by deadline errors, which count as finished as well as results
    options = RouterOptions(bootstrap=broker, prefix=prefix, default_timeout_s=1.0)
    router = PipelineRouter(SPEC, routing, options, hooks)
    router.start()
    try:
        assert router.wait_joined(60)
        produce_all(broker, ingress, _requests([f"ok-{i}" for i in range(k)]))
        assert hooks.reached.wait(60), "the first k requests were never committed"
        produce_all(broker, ingress, _requests(["fatal", "after-1", "after-2"]))
        assert router.loop.join(60), "the router did not stop on its failure"
    finally:
        router.stop()
    assert isinstance(router.failure, _Fatal)
    assert _committed(broker, router_group(prefix, "tf"), ingress) == k
