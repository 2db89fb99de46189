"""Exactly-once results on Apache Kafka: a router, and separately a stage worker, SIGKILLed under
load. With ``--exactly-once`` no request loses its result and none gets two; without it none is
lost and the duplicates that at-least-once allows are counted (and printed: ``-s`` shows them).

Results are read ``read_committed`` (librdkafka's default): a killed worker's open transaction
is aborted when its successor takes its transactional id back, and never seen.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from modelyard.control import Rollout
from modelyard.control.topic import write_change
from modelyard.repository.build import BuildContext
from modelyard.topics import pipeline_inbox_topic, pipeline_ingress_topic, pipeline_results_topic
from modelyard.wire import Envelope, encode_envelope

from tests.integration.conftest import broker_engine
from tests.support.kafka_io import Collector, produce_all
from tests.support.keys import admin
from tests.support.models import write_shout_version
from tests.support.stage import RouterProcess, StageProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        broker_engine() != "kafka",
        reason="exactly-once is tested on Apache Kafka (MODELYARD_TEST_BROKER=kafka, make "
        "test-kafka): transactions with consumer-group offsets and fencing",
    ),
]

SPEC_TEXT = """
pipeline: tf
version: 1
inputs: {text: {datatype: BYTES, shape: [-1]}}
stages:
  first: {model: shout, inputs: {text: request.text}}
  second: {model: shout, inputs: {text: first.shout}}
outputs: {loud: second.shout}
"""
TOTAL = 1500
PARTITIONS = 2


@dataclass(frozen=True)
class Tally:
    """Results per request id after every worker stopped: what a kill cost."""

    sent: int
    answered: int
    lost: int
    duplicated: int  # results beyond the first of a request
    extra_replies: int  # stage replies beyond one per stage and request (the router drops them)

    def row(self, what: str) -> str:
        counts = f"sent {self.sent}, answered {self.answered}, lost {self.lost}"
        return f"{what}: {counts}, duplicated {self.duplicated}, extra replies {self.extra_replies}"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(tmp_path_factory.mktemp("models"))
    write_shout_version(BuildContext(root=root, cache=root / ".cache"), "1")
    (root / "tf.yaml").write_text(SPEC_TEXT)
    return root


class Pipeline:
    """Pipeline ``tf`` under a fresh prefix: one stage process serving both stages, routers."""

    def __init__(self, broker: str, root: Path, state: Path, exactly_once: bool) -> None:
        self.broker, self.root, self.state = broker, root, state
        self.prefix = f"eo-{uuid.uuid4().hex[:8]}"
        self.flags = ("--exactly-once",) if exactly_once else ()
        self.ids = [f"r-{i}" for i in range(TOTAL)]

    def stage(self) -> StageProcess:
        stage = StageProcess("shout:1", self.root, *self._common("stage"), "--no-grpc")
        stage.wait_ready(90)
        return stage

    def router(self) -> RouterProcess:
        options = (*self._common("router"), "--no-grpc", "--partitions", str(PARTITIONS))
        router = RouterProcess(str(self.root / "tf.yaml"), self.root, *options)
        router.wait_ready(90)
        return router

    def roll_out(self) -> None:
        for stage in ("first", "second"):
            write_change(self.broker, "tf", Rollout(stage=stage, version="1"), signer=admin(),
                         prefix=self.prefix)  # fmt: skip

    def send_all(self) -> None:
        requests: list[tuple[str, bytes, list[tuple[str, bytes]]]] = [
            (rid, encode_envelope(Envelope(rid, {"text": [rid]})), []) for rid in self.ids
        ]
        produce_all(self.broker, pipeline_ingress_topic(self.prefix, "tf"), requests)

    def results(self) -> Collector:
        return Collector(self.broker, pipeline_results_topic(self.prefix, "tf"), PARTITIONS)

    def all_answered(self, results: Collector) -> None:
        wanted = {rid.encode() for rid in self.ids}
        results.until(lambda m: wanted <= {x.key() for x in m}, 180)

    def tally(self) -> Tally:
        """Every committed result, read to the end once all workers have stopped."""
        counts = Counter(_read_to_end(self.broker, pipeline_results_topic(self.prefix, "tf")))
        answered = [rid for rid in self.ids if counts[rid.encode()]]
        duplicated = sum(n - 1 for n in counts.values() if n > 1)
        replies = len(_read_to_end(self.broker, pipeline_inbox_topic(self.prefix, "tf")))
        lost = len(self.ids) - len(answered)
        return Tally(len(self.ids), len(answered), lost, duplicated, replies - 2 * len(self.ids))

    def _common(self, role: str) -> tuple[str, ...]:
        return ("--bootstrap", self.broker, "--topic-prefix", self.prefix,
                "--state-dir", str(self.state / role), *self.flags)  # fmt: skip


def _read_to_end(bootstrap: str, topic: str) -> list[bytes]:
    """The keys of every committed record of ``topic`` (nothing writes to it any more)."""
    config = {"bootstrap.servers": bootstrap, "group.id": f"tally-{topic}",
              "isolation.level": "read_committed", "enable.auto.commit": False}  # fmt: skip
    consumer = Consumer(config)
    try:
        tps = [TopicPartition(topic, p, 0) for p in range(PARTITIONS)]
        ends = [consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in tps]
        consumer.assign(tps)
        keys: list[bytes] = []
        while any(tp.offset < end for tp, end in zip(consumer.position(tps), ends, strict=True)):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                keys.append(msg.key() or b"")
        return keys
    finally:
        consumer.close()


def _stop_all(workers: Sequence[StageProcess]) -> None:
    for worker in workers:
        code = worker.terminate()
        assert code == 0, "\n".join(worker.lines[-20:])


@pytest.fixture(params=[True, False], ids=["exactly-once", "at-least-once"])
def pipeline(
    request: pytest.FixtureRequest, broker: str, repository: Path, tmp_path: Path
) -> Pipeline:
    return Pipeline(broker, repository, tmp_path, exactly_once=request.param)


def _check(pipeline: Pipeline, what: str, tally: Tally) -> None:
    print(tally.row(f"{what} ({'exactly once' if pipeline.flags else 'at least once'})"))
    assert tally.lost == 0, tally
    if pipeline.flags:
        assert tally.duplicated == 0, tally


# the kills ---------------------------------------------------------------------------------
def test_a_router_killed_under_load(pipeline: Pipeline) -> None:
    pipeline.roll_out()
    stage = pipeline.stage()
    results = pipeline.results()
    first = pipeline.router()
    try:
        pipeline.send_all()
        results.until(lambda m: len(m) >= 200, 90)  # routing, and far from done
    finally:
        first.kill()  # SIGKILL
    answered_before = len({m.key() for m in results.messages})
    successor = pipeline.router()  # the same group and slot: it fences the dead one's transaction
    try:
        pipeline.all_answered(results)
    finally:
        results.close()
        _stop_all([successor, stage])
    assert answered_before < TOTAL  # it really died mid-stream
    _check(pipeline, "router SIGKILLed", pipeline.tally())


def test_a_stage_worker_killed_under_load(pipeline: Pipeline) -> None:
    pipeline.roll_out()
    first = pipeline.stage()
    results = pipeline.results()
    router = pipeline.router()
    try:
        pipeline.send_all()
        results.until(lambda m: len(m) >= 200, 90)
    finally:
        first.kill()
    answered_before = len({m.key() for m in results.messages})
    successor = pipeline.stage()
    try:
        pipeline.all_answered(results)
    finally:
        results.close()
        _stop_all([router, successor])
    assert answered_before < TOTAL
    tally = pipeline.tally()
    _check(pipeline, "stage SIGKILLed", tally)
    if pipeline.flags:  # the stage's own replies were exactly once too
        assert tally.extra_replies == 0, tally
