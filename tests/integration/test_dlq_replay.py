"""`modelyard dlq replay` on the real broker: dead letters back where they came from, each once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from modelyard.broker import create_topics
from modelyard.broker.dlq import REPLAY_OF, DeadLetter, resubmission
from modelyard.broker.dlq_replay import done_group, intent_group
from modelyard.cli.main import cli
from modelyard.control import StageRouting
from modelyard.graph import parse_spec
from modelyard.repository.build import BuildContext
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.topics import (
    audit_topic,
    model_dlq_topic,
    model_input_topic,
    pipeline_dlq_topic,
    pipeline_inbox_topic,
    pipeline_ingress_topic,
    pipeline_results_topic,
)
from modelyard.wire import Envelope, decode_envelope, encode_envelope
from modelyard.wire.headers import dead_letter

from tests.support.kafka_io import Collector, produce_all
from tests.support.models import write_broken_version, write_shout_version
from tests.support.routing import StaticRouting
from tests.support.stage import StageProcess

pytestmark = pytest.mark.integration

ORIGINAL_HEADERS = [("content-type", b"application/msgpack"), ("x-team", b"fraud")]


def read_all(bootstrap: str, topic: str) -> list[Message]:
    """Every record of ``topic`` (one partition), read to its end."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "read-all", "enable.partition.eof": True,
        "fetch.wait.max.ms": 10,
    })  # fmt: skip
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[Message] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error() is None:
                found.append(msg)
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                return found
        raise TimeoutError(f"{topic} was not read to its end")
    finally:
        consumer.close()


def letter(
    value: bytes, source: str, *, max_bytes: int = 1 << 20, rid: str = "r"
) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """A dead letter as a stage writes it: original bytes, then why, then its trace context."""
    dead, headers = dead_letter(
        value, ORIGINAL_HEADERS, "the model cannot digest it", "model", source=source,
        max_bytes=max_bytes, stage="first", model="shout:1",
    )  # fmt: skip
    return rid, dead, [*headers, ("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]


class Topics:
    def __init__(self, broker: str, unique: str) -> None:
        self.broker, self.prefix = broker, unique
        self.dlq = model_dlq_topic(unique, "shout", "1")
        self.target = model_input_topic(unique, "shout", "1")
        create_topics(broker, [self.dlq, self.target])

    def replay(self, *args: str) -> Result:
        argv = ["dlq", "replay", self.dlq, "--bootstrap", self.broker, "--prefix", self.prefix]
        result = CliRunner().invoke(cli, [*argv, *args])
        assert result.exit_code == 0, result.output
        return result

    def replayed(self) -> list[Message]:
        return read_all(self.broker, self.target)


@pytest.fixture
def topics(broker: str, unique: str) -> Topics:
    return Topics(broker, unique)


def _header(msg: Message, name: str) -> bytes | None:
    return dict(msg.headers() or []).get(name)


def test_each_letter_goes_back_once_with_its_original_bytes(topics: Topics) -> None:
    big = b"x" * 600
    produce_all(topics.broker, topics.dlq, [
        letter(b"first", topics.target, rid="a"),
        letter(big, topics.target, max_bytes=4096 + 300, rid="big"),  # only its start is kept
        letter(b"second", topics.target, rid="b"),
        letter(b"lost", "somewhere else entirely", rid="c"),
    ])  # fmt: skip

    first = topics.replay()

    replayed = topics.replayed()
    assert [(m.key(), m.value()) for m in replayed] == [(b"a", b"first"), (b"b", b"second")]
    assert [(k, v) for k, v in replayed[0].headers() or [] if k != REPLAY_OF] == ORIGINAL_HEADERS
    assert _header(replayed[0], REPLAY_OF) == f"{topics.dlq}/0/0".encode()
    assert _header(replayed[1], REPLAY_OF) == f"{topics.dlq}/0/2".encode()
    assert "re-submitted 2, skipped 2" in first.output
    assert "original truncated (600 bytes" in first.output
    assert "unknown source" in first.output

    second = topics.replay()
    assert "re-submitted 0, skipped 0" in second.output
    assert len(topics.replayed()) == 2


def test_a_dry_run_lists_what_it_would_send_and_changes_nothing(topics: Topics) -> None:
    produce_all(topics.broker, topics.dlq, [letter(b"one", topics.target, rid="a")])

    dry = topics.replay("--dry-run")

    assert "would re-submit" in dry.output
    assert f"0/0 -> {topics.target}  model: the model cannot digest it  3 B" in dry.output
    assert topics.replayed() == []
    probe = Consumer({"bootstrap.servers": topics.broker,
                      "group.id": done_group(topics.prefix, topics.dlq)})  # fmt: skip
    try:
        [committed] = probe.committed([TopicPartition(topics.dlq, 0)], timeout=10)
    finally:
        probe.close()
    assert committed.offset < 0  # nothing recorded as handled
    assert "re-submitted 1, skipped 0" in topics.replay().output


def test_a_run_killed_midway_is_finished_without_sending_anything_twice(topics: Topics) -> None:
    records = [letter(f"v{i}".encode(), topics.target, rid=f"k{i}") for i in range(3)]
    produce_all(topics.broker, topics.dlq, records)
    # what a run leaves when it dies after sending the first letter of its batch: the intent
    # (the batch's end, the target's end before it sent), the first letter out, nothing done
    intent = Consumer({"bootstrap.servers": topics.broker,
                       "group.id": intent_group(topics.prefix, topics.dlq)})  # fmt: skip
    intent.commit(offsets=[TopicPartition(topics.dlq, 0, 3), TopicPartition(topics.target, 0, 0)],
                  asynchronous=False)  # fmt: skip
    intent.close()
    key, value, headers = records[0]
    sent = resubmission(DeadLetter(topics.dlq, 0, 0, 0, key.encode(), value, headers))
    produce_all(topics.broker, topics.target, [(key, sent[1], sent[2])])

    result = topics.replay()

    assert "re-submitted 2" in result.output
    assert "1 already sent by an interrupted run" in result.output
    replayed = topics.replayed()
    assert sorted(m.value() for m in replayed) == [b"v0", b"v1", b"v2"]
    assert sorted(_header(m, REPLAY_OF) or b"" for m in replayed) == [
        f"{topics.dlq}/0/{i}".encode() for i in range(3)
    ]
    assert "re-submitted 0" in topics.replay().output


def test_since_passes_over_older_letters(topics: Topics) -> None:
    producer = Producer({"bootstrap.servers": topics.broker})
    two_hours_ago = int((time.time() - 7200) * 1000)
    for (key, value, headers), at in [
        (letter(b"old", topics.target, rid="old"), two_hours_ago),
        (letter(b"new", topics.target, rid="new"), int(time.time() * 1000)),
    ]:
        producer.produce(topics.dlq, value, key, headers=headers, timestamp=at)
    assert producer.flush(10) == 0

    result = topics.replay("--since", "1h")

    assert "re-submitted 1, skipped 0, passed over 1 older than --since" in result.output
    assert [m.value() for m in topics.replayed()] == [b"new"]


# a pipeline whose stage dead-letters what it is sent, then a fix ----------------------------
SPEC = parse_spec(
    """
pipeline: dr
version: 1
inputs: {text: {datatype: BYTES, shape: [-1]}}
stages:
  first: {model: shout, inputs: {text: request.text}}
outputs: {loud: [first.shout]}
""",
    "dr.yaml",
)


class Pipeline:
    def __init__(self, broker: str, prefix: str, root: Path) -> None:
        self.broker, self.prefix, self.root = broker, prefix, root
        self.routing = StaticRouting("dr", first=StageRouting(active="1"))
        self.router: PipelineRouter | None = None

    def start_router(self) -> None:
        self.router = PipelineRouter(
            SPEC, self.routing, RouterOptions(bootstrap=self.broker, prefix=self.prefix)
        )
        self.router.start()
        assert self.router.wait_joined(60)

    def stop_router(self) -> None:
        router, self.router = self.router, None
        if router is not None:
            router.stop()
            assert router.failure is None

    def results(self, count: int) -> list[Envelope]:
        collector = Collector(self.broker, pipeline_results_topic(self.prefix, "dr"))
        try:
            messages = collector.until(lambda ms: len(ms) >= count)
        finally:
            collector.close()
        return [decode_envelope(m.value()) for m in messages]

    def replay(self, topic: str, *args: str) -> str:
        argv = ["dlq", "replay", topic, "--bootstrap", self.broker, "--prefix", self.prefix]
        result = CliRunner().invoke(cli, [*argv, *args])
        assert result.exit_code == 0, result.output
        return result.output


@pytest.fixture
def pipeline(broker: str, unique: str, tmp_path: Path) -> Iterator[Pipeline]:
    ctx = BuildContext(root=tmp_path, cache=tmp_path / ".cache")
    write_broken_version(ctx, "1")  # the bad release
    write_shout_version(ctx, "2")  # the fix; still refuses "boom"
    create_topics(broker, [
        pipeline_ingress_topic(unique, "dr"), pipeline_inbox_topic(unique, "dr"),
        pipeline_results_topic(unique, "dr"), pipeline_dlq_topic(unique, "dr"),
        audit_topic(unique), *(model_input_topic(unique, "shout", v) for v in "12"),
        *(model_dlq_topic(unique, "shout", v) for v in "12"),
    ])  # fmt: skip
    stages = [
        StageProcess(
            f"shout:{v}", tmp_path, "--bootstrap", broker, "--topic-prefix", unique, "--no-grpc"
        )
        for v in "12"
    ]
    try:
        for stage in stages:
            stage.wait_ready(60)
        running = Pipeline(broker, unique, tmp_path)
        yield running
        running.stop_router()
    finally:
        for stage in stages:
            stage.terminate()


def test_after_a_fix_each_dead_letter_is_routed_again_once(pipeline: Pipeline) -> None:
    prefix = pipeline.prefix
    texts = {"a": "hello", "b": "world", "c": "boom"}
    requests = {rid: encode_envelope(Envelope(rid, {"text": [t]})) for rid, t in texts.items()}
    pipeline.start_router()
    produce_all(pipeline.broker, pipeline_ingress_topic(prefix, "dr"),
                [(rid, value, []) for rid, value in requests.items()])  # fmt: skip
    assert all(r.error is not None for r in pipeline.results(3))  # the bad release fails all
    dlq = pipeline_dlq_topic(prefix, "dr")
    assert len(read_all(pipeline.broker, dlq)) == 3
    # the stage's own letters hold the router's dispatches: the pipeline's DLQ is the one to replay
    stage_dlq = pipeline.replay(model_dlq_topic(prefix, "shout", "1"), "--dry-run")
    assert "would re-submit 0, skipped 3" in stage_dlq
    assert "a router's dispatch (stage first)" in stage_dlq

    # the fix: the stage rolled forward to a version that works, under the same running router,
    # which routes a replayed request again although it finished that id before
    pipeline.routing.set(first=StageRouting(active="2"))
    assert "would re-submit 3" in pipeline.replay(dlq, "--dry-run")
    first = pipeline.replay(dlq)

    results = pipeline.results(6)[3:]
    outcome = {
        r.request_id: r.error.code if r.error else r.fields["loud"].tolist() for r in results
    }
    assert outcome == {"a": [b"HELLO"], "b": [b"WORLD"], "c": "model"}
    assert "re-submitted 3, skipped 0" in first
    ingress = read_all(pipeline.broker, pipeline_ingress_topic(prefix, "dr"))
    assert sorted(m.value() for m in ingress[3:]) == sorted(requests.values())  # original bytes

    # "boom" failed again: its new letter names the replay, and only it goes back
    again = [m for m in read_all(pipeline.broker, dlq) if m.key() == b"c"][-1]
    assert _header(again, REPLAY_OF) == f"{dlq}/0/2".encode()
    second = pipeline.replay(dlq)
    assert "re-submitted 1 (1 had failed again after an earlier replay), skipped 0" in second
    replays = [_header(m, REPLAY_OF) for m in read_all(pipeline.broker, ingress[0].topic())]
    assert replays.count(f"{dlq}/0/0".encode()) == 1  # "a" went back once in two runs
    assert replays.count(f"{dlq}/0/1".encode()) == 1
