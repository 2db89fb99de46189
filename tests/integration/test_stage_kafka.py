"""A stage served by `modelyard serve` against the real embedded broker."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from modelyard.broker import create_topics
from modelyard.repository.build import BuildContext
from modelyard.wire import Envelope, decode_envelope, encode_envelope
from modelyard.wire.headers import header_value

from tests.support.kafka_io import Collector, produce_all
from tests.support.models import write_shout_version
from tests.support.onnx_models import write_affine_version
from tests.support.stage import StageProcess, running_stage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    ctx = BuildContext(root=root, cache=root / ".cache")
    write_shout_version(ctx)
    write_shout_version(ctx, version="slow", max_batch_size=1, max_queue=8)
    write_affine_version(root)
    return root


def request(
    rid: str, reply_to: str, **fields: object
) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    value = encode_envelope(Envelope(rid, fields))
    return rid, value, [("reply-to", reply_to.encode())]


def replies_by_id(messages: list) -> dict[str, Envelope]:  # type: ignore[type-arg]
    return {m.key().decode(): decode_envelope(m.value()) for m in messages}


def stage_args(unique: str, broker: str) -> list[str]:
    return [
        "--bootstrap",
        broker,
        "--input-topic",
        f"{unique}.in",
        "--group",
        f"{unique}.g",
        "--topic-prefix",
        unique,
        "--no-grpc",
    ]


def test_requests_are_answered_with_their_ids(broker: str, unique: str, repo: Path) -> None:
    create_topics(broker, [f"{unique}.in", f"{unique}.out"])
    produce_all(
        broker,
        f"{unique}.in",
        (request(f"r{i}", f"{unique}.out", text=[f"hello {i}"]) for i in range(50)),
    )
    replies = Collector(broker, f"{unique}.out")
    with running_stage("shout:1", repo, *stage_args(unique, broker)):
        got = replies_by_id(replies.until(lambda m: len(m) >= 50))
    replies.close()
    assert set(got) == {f"r{i}" for i in range(50)}
    assert got["r7"].fields["shout"].tolist() == [b"HELLO 7"]
    assert (got["r7"].model, got["r7"].version, got["r7"].error) == ("shout", "1", None)


def test_onnx_model_over_kafka_with_ndarrays(broker: str, unique: str, repo: Path) -> None:
    create_topics(broker, [f"{unique}.in", f"{unique}.out"])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    produce_all(broker, f"{unique}.in", [request("a1", f"{unique}.out", x=x)])
    replies = Collector(broker, f"{unique}.out")
    with running_stage("affine:1", repo, *stage_args(unique, broker)):
        got = replies_by_id(replies.until(lambda m: len(m) >= 1))
    replies.close()
    (out,) = got["a1"].fields.values()
    np.testing.assert_allclose(out, 2 * x + 1)


def test_bad_input_is_dead_lettered_and_traffic_keeps_flowing(
    broker: str, unique: str, repo: Path
) -> None:
    out, dlq = f"{unique}.out", f"{unique}.m.shout.1.dlq"
    create_topics(broker, [f"{unique}.in", out, dlq])
    bad = {
        "garbage": b"\xc1 not msgpack",
        "wrong-dtype": encode_envelope(Envelope("wrong-dtype", {"text": np.ones(2, np.float32)})),
        "oversize": encode_envelope(Envelope("oversize", {"text": ["x" * 70_000]})),
        "raises": encode_envelope(Envelope("raises", {"text": ["boom"]})),
        "unknown-field": encode_envelope(Envelope("unknown-field", {"txt": ["hi"]})),
    }
    records = []
    for i in range(40):
        records.append(request(f"ok{i}", out, text=[f"fine {i}"]))
        if i % 8 == 0 and bad:
            key, value = bad.popitem()
            records.append((key, value, [("reply-to", out.encode())]))
    originals = {k: v for k, v, _ in records if not k.startswith("ok")}
    produce_all(broker, f"{unique}.in", records)
    replies, letters = Collector(broker, out), Collector(broker, dlq)
    with running_stage("shout:1", repo, *stage_args(unique, broker)):
        got = replies_by_id(replies.until(lambda m: len(m) >= 45))
        dead = letters.until(lambda m: len(m) >= 5)
    replies.close()
    letters.close()
    assert all(got[f"ok{i}"].error is None for i in range(40))
    assert {m.key().decode(): m.value() for m in dead} == originals  # original bytes, untouched
    codes = {m.key().decode(): header_value(m.headers(), "dlq-error-code") for m in dead}
    assert codes == {
        "garbage": "decode",
        "wrong-dtype": "validation",
        "oversize": "too_large",
        "raises": "model",
        "unknown-field": "validation",
    }
    raised = next(m for m in dead if m.key() == b"raises")
    assert "cannot digest 'boom'" in (header_value(raised.headers(), "dlq-error") or "")
    raised_error, garbage_error = got["raises"].error, got["garbage"].error
    assert raised_error is not None
    assert raised_error.code == "model"
    assert garbage_error is not None
    assert "msgpack" in garbage_error.message


def test_oip_json_request_gets_json_reply(broker: str, unique: str, repo: Path) -> None:
    out = f"{unique}.out"
    create_topics(broker, [f"{unique}.in", out])
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hola"]}]}
    headers = [("reply-to", out.encode()), ("content-type", b"application/json")]
    produce_all(broker, f"{unique}.in", [("j1", json.dumps(body).encode(), headers)])
    replies = Collector(broker, out)
    with running_stage("shout:1", repo, *stage_args(unique, broker)):
        (msg,) = replies.until(lambda m: len(m) >= 1)
    replies.close()
    reply = json.loads(msg.value())
    assert reply["id"] == "j1"
    assert reply["outputs"] == [
        {"name": "shout", "datatype": "BYTES", "shape": [1], "data": ["HOLA"]}
    ]


def test_sigkill_mid_stream_loses_no_request(broker: str, unique: str, repo: Path) -> None:
    total, out = 3000, f"{unique}.out"
    create_topics(broker, [f"{unique}.in", out])
    produce_all(
        broker, f"{unique}.in", (request(f"k{i}", out, text=[f"n{i}"]) for i in range(total))
    )
    replies = Collector(broker, out)
    first = StageProcess("shout:1", repo, *stage_args(unique, broker))
    try:
        first.wait_ready()
        replies.until(lambda m: len(m) >= 300)
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.kill()
    answered_before_kill = len(replies.messages)
    with running_stage("shout:1", repo, *stage_args(unique, broker)):
        replies.until(lambda m: len({x.key() for x in m}) >= total, timeout=120)
    replies.close()
    assert {m.key().decode() for m in replies.messages} == {f"k{i}" for i in range(total)}
    assert answered_before_kill < total  # it really died mid-stream


def test_sigterm_drains_and_commits_what_was_answered(broker: str, unique: str, repo: Path) -> None:
    total, out, group = 2000, f"{unique}.out", f"{unique}.g"
    create_topics(broker, [f"{unique}.in", out])
    produce_all(
        broker, f"{unique}.in", (request(f"t{i}", out, text=[f"n{i}"]) for i in range(total))
    )
    replies = Collector(broker, out)
    stage = StageProcess("shout:1", repo, *stage_args(unique, broker))
    try:
        stage.wait_ready()
        replies.until(lambda m: len(m) >= 200)
        assert stage.terminate() == 0
    finally:
        stage.kill()
    probe = Consumer({"bootstrap.servers": broker, "group.id": group})
    (committed,) = probe.committed([TopicPartition(f"{unique}.in", 0)], timeout=10)
    probe.close()
    assert committed.offset > 0
    # replies of concurrent batches interleave on the out topic, and some past the committed
    # offset are there too, so wait for the committed ones themselves, not for a count
    committed_ids = {f"t{i}" for i in range(committed.offset)}
    with contextlib.suppress(TimeoutError):
        replies.until(lambda m: committed_ids <= {x.key().decode() for x in m}, timeout=30)
    replies.close()
    answered = {m.key().decode() for m in replies.messages}
    assert committed_ids <= answered, "committed unanswered: " + ", ".join(
        sorted(committed_ids - answered)[:20]
    )


def committed_offset(probe: Consumer, topic: str) -> int:
    (tp,) = probe.committed([TopicPartition(topic, 0)], timeout=10)
    return int(tp.offset)


def test_a_stage_that_stops_on_a_failure_commits_nothing_from_the_failed_message_on(
    broker: str, unique: str, repo: Path
) -> None:
    k, topic, out, group = 20, f"{unique}.in", f"{unique}.out", f"{unique}.g"
    dlq = f"{unique}.m.shout.1.dlq"
    create_topics(broker, [topic, out, dlq], partitions=1)
    produce_all(broker, topic, (request(f"a{i}", out, text=[f"n{i}"]) for i in range(k)))
    replies, letters = Collector(broker, out), Collector(broker, dlq)
    # a dead letter this stage's producer refuses: losing it would lose the message, so it stops
    small = {"MODELYARD_KAFKA_CONFIG": json.dumps({"message.max.bytes": 4096})}
    stage = StageProcess("shout:1", repo, *stage_args(unique, broker), env=small)
    probe = Consumer({"bootstrap.servers": broker, "group.id": group})
    try:
        stage.wait_ready()
        replies.until(lambda m: len(m) >= k)
        wait_until(lambda: committed_offset(probe, topic) == k, "the first k committed")
        bad = (f"a{k}", b"\xc1" * 8000, [("reply-to", out.encode())])  # undecodable: refused
        later = (request(f"a{i}", out, text=[f"n{i}"]) for i in range(k + 1, k + 10))
        produce_all(broker, topic, [bad, *later])
        assert stage.proc.wait(60) == 1, "\n".join(stage.lines[-30:])
        assert committed_offset(probe, topic) == k  # nothing from the failed message on
    finally:
        stage.kill()
        probe.close()
    with running_stage("shout:1", repo, *stage_args(unique, broker)):  # the next one redoes it
        dead = letters.until(lambda m: len(m) >= 1)
        replies.until(lambda m: {f"a{i}".encode() for i in range(k + 10)} <= {x.key() for x in m})
    replies.close()
    letters.close()
    assert [m.key() for m in dead] == [f"a{k}".encode()]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)


def test_one_trace_from_producer_through_stage_to_reply(
    broker: str, unique: str, repo: Path
) -> None:
    out = f"{unique}.out"
    create_topics(broker, [f"{unique}.in", out])
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    rid, value, headers = request("traced", out, text=["hi"])
    headers.append(("traceparent", f"00-{trace_id}-{parent}-01".encode()))
    produce_all(broker, f"{unique}.in", [(rid, value, headers)])
    replies = Collector(broker, out)
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "stage-under-test"}
    stage = StageProcess("shout:1", repo, *stage_args(unique, broker), env=env)
    try:
        stage.wait_ready()
        (msg,) = replies.until(lambda m: len(m) >= 1)
        assert stage.terminate() == 0
    finally:
        stage.kill()
    replies.close()
    traceparent = header_value(msg.headers(), "traceparent") or ""
    _, reply_trace, reply_span, _ = traceparent.split("-")
    assert reply_trace == trace_id
    assert reply_span != parent  # continued by the stage's own span
    spans = [line for line in stage.lines if f'"trace_id": "0x{trace_id}"' in line]
    assert spans, "the stage exported no span in the producer's trace"
    assert os.environ.get("OTEL_TRACES_EXPORTER") is None  # the test did not leak settings


def test_slow_model_pauses_intake_instead_of_buffering(
    broker: str, unique: str, repo: Path
) -> None:
    total, out = 200, f"{unique}.out"
    create_topics(broker, [f"{unique}.in", out])
    produce_all(
        broker, f"{unique}.in", (request(f"s{i}", out, text=["slow:15"]) for i in range(total))
    )
    replies = Collector(broker, out)
    with running_stage("shout:slow", repo, *stage_args(unique, broker)) as (_, ready):
        metrics_url = f"http://{ready['metrics']}/metrics"
        paused_seen = wait_for_metric(
            metrics_url, r'modelyard_intake_paused\{model="shout",version="slow"\} 1\.0'
        )
        lag_seen = wait_for_metric(metrics_url, r"modelyard_consumer_lag\{[^}]*\} [1-9]")
        replies.until(lambda m: len(m) >= total, timeout=90)
        resumed = wait_for_metric(
            metrics_url, r'modelyard_intake_paused\{model="shout",version="slow"\} 0\.0'
        )
    replies.close()
    assert paused_seen
    assert lag_seen
    assert resumed
    assert {m.key().decode() for m in replies.messages} == {f"s{i}" for i in range(total)}


def wait_for_metric(url: str, pattern: str, timeout: float = 30) -> bool:
    """Poll /metrics until a line matches ``pattern`` (a regex)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as response:
            if re.search(pattern, response.read().decode()):
                return True
    return False


def test_hostile_values_are_dead_lettered_not_fatal(broker: str, unique: str, repo: Path) -> None:
    out, dlq = f"{unique}.out", f"{unique}.m.shout.1.dlq"
    create_topics(broker, [f"{unique}.in", out, dlq])
    json_headers = [("reply-to", out.encode()), ("content-type", b"application/json")]
    records = [
        ("nested", b"[" * 50_000, json_headers),  # RecursionError inside the JSON parser
        ("ragged", encode_envelope(Envelope("ragged", {"text": [[b"a"], [b"b", b"c"]]})),
         [("reply-to", out.encode())]),
        ("bad-reply-to", encode_envelope(Envelope("bad-reply-to", {"text": ["x"]})),
         [("reply-to", b"not a topic!")]),
        request("after", out, text=["still flowing"]),
    ]  # fmt: skip
    produce_all(broker, f"{unique}.in", records)
    replies, letters = Collector(broker, out), Collector(broker, dlq)
    with running_stage("shout:1", repo, *stage_args(unique, broker)) as (stage, _):
        dead = letters.until(lambda m: len(m) >= 3)
        msgs = replies.until(lambda m: {b"after", b"nested"} <= {x.key() for x in m})
        assert stage.proc.poll() is None  # still serving
    replies.close()
    letters.close()
    codes = {m.key().decode(): header_value(m.headers(), "dlq-error-code") for m in dead}
    assert codes == {"nested": "decode", "ragged": "validation", "bad-reply-to": "decode"}
    by_key = {m.key().decode(): m.value() for m in msgs}
    assert json.loads(by_key["nested"])["code"] == "decode"  # JSON in, JSON error out
    assert decode_envelope(by_key["after"]).fields["shout"].tolist() == [b"STILL FLOWING"]
    assert "bad-reply-to" not in by_key  # never replied to an unusable topic


def test_a_message_that_kills_the_stage_is_dead_lettered_after_bounded_restarts(
    broker: str, unique: str, repo: Path, tmp_path: Path
) -> None:
    out, dlq = f"{unique}.out", f"{unique}.m.shout.1.dlq"
    create_topics(broker, [f"{unique}.in", out, dlq])
    die = request("die-1", out, text=["die"])
    produce_all(broker, f"{unique}.in", [request("before", out, text=["a"]), die,
                                         request("after", out, text=["b"])])  # fmt: skip
    replies, letters = Collector(broker, out), Collector(broker, dlq)
    state = {"MODELYARD_STATE_DIR": str(tmp_path / "state")}
    starts, stages = 0, []
    try:
        while True:  # what a supervisor does: start it again each time it dies
            starts += 1
            stage = StageProcess("shout:1", repo, *stage_args(unique, broker), env=state)
            stages.append(stage)
            msgs = replies.until(
                lambda m, s=stage: (
                    s.proc.poll() is not None  # type: ignore[misc]
                    or {b"after", b"die-1"} <= {x.key() for x in m}
                ),
                90,
            )
            if stage.proc.poll() is None:  # answered everything and still up
                break
            assert stage.proc.returncode == -signal.SIGKILL
            assert starts < 5, "the stage kept dying on the same message"
        dead = letters.until(lambda m: b"die-1" in {x.key() for x in m})
    finally:
        for one in stages:
            one.kill()
        replies.close()
        letters.close()
    assert starts == 4  # died handling it, then twice more handling it alone, then refused it
    [letter] = [m for m in dead if m.key() == b"die-1"]
    assert letter.value() == die[1]
    assert header_value(letter.headers(), "dlq-error-code") == "internal"
    assert "died 2 times" in (header_value(letter.headers(), "dlq-error") or "")
    by_key = replies_by_id(msgs)
    assert by_key["die-1"].error is not None
    assert by_key["die-1"].error.code == "internal"
    assert by_key["after"].fields["shout"].tolist() == [b"B"]
