"""Hostile traffic end to end: a stream mixing valid requests with a few hundred hostile messages,
into a running stack's ingress (the router) and straight into a stage's input topic (langid).

Nothing may restart; every valid request gets its result; every hostile message with a usable
request id gets an error result with the code its kind was built with (see
tests/support/hostile.py); and every one that is poison sits in a dead-letter topic with its
original bytes (or, for a record larger than any topic takes, the first bytes with
``dlq-truncated`` and ``dlq-sha256``) and a readable reason.

The 101 MB record is over the topics' ``max.message.bytes`` (32 MiB). The embedded broker takes
it (it does not enforce the topic limit) and the stack must refuse it downstream; Apache Kafka
refuses it at produce time (``MSG_SIZE_TOO_LARGE``), so there it is refused at the edge: counted
apart, never sent, and nothing may come back for it (``MODELYARD_TEST_BROKER``).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer
from modelyard.broker import create_topics
from modelyard.kafka.config import MAX_MESSAGE_BYTES
from modelyard.stack import Stack
from modelyard.topics import (
    model_dlq_topic,
    model_input_topic,
    pipeline_dlq_topic,
    pipeline_ingress_topic,
    pipeline_results_topic,
)
from modelyard.wire import decode_envelope

from tests.integration.conftest import broker_engine
from tests.support.hostile import HUGE, KINDS, TAG, Sent, Target, messages, valid_request
from tests.support.kafka_io import Collector, produce_all
from tests.support.pipelines import TEXT_SPEC

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PIPELINE = "text"
STAGE = "langid"
PARTITIONS = 2
COPIES = 4  # of each hostile kind, per target
WAIT_S = 100.0  # past the router's 30 s default deadline: a lost stage reply shows as `deadline`
Problem = tuple[str, str]  # (kind, what is wrong)


class Lines:
    """The children's output, the last lines of it, for the failure report."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque(maxlen=4000)
        self._lock = threading.Lock()

    def __call__(self, name: str, line: str) -> None:
        with self._lock:
            self._lines.append(f"{name}: {line[:500]}")

    def alarming(self) -> list[str]:
        words = ("Traceback", "Exception:", "[error", "unexpectedly", "exited", "restart")
        with self._lock:
            return [line for line in self._lines if any(w in line for w in words)]


@dataclass
class Topics:
    out: str
    ingress_replies: str
    stage_replies: str
    pipeline_dlq: str
    model_dlq: str


@dataclass
class Seen:
    """What came back, by topic."""

    results: list[Message] = field(default_factory=list)
    ingress_replies: list[Message] = field(default_factory=list)
    stage_replies: list[Message] = field(default_factory=list)
    pipeline_dlq: list[Message] = field(default_factory=list)
    model_dlq: list[Message] = field(default_factory=list)


def test_hostile_stream_gets_answers_and_dead_letters_without_restarts(
    broker: str, reference_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    prefix = f"hs{uuid.uuid4().hex[:10]}"
    spec = tmp_path / "text.yaml"
    spec.write_text(TEXT_SPEC)
    lines = Lines()
    stack = Stack(
        pipelines=(spec,), repository=reference_repo, bootstrap=broker, topic_prefix=prefix,
        partitions=PARTITIONS, router_port=0, log_level="WARNING", on_line=lines,
    )  # fmt: skip
    with stack:
        pids = stack.processes()
        version = stack.state.pipeline(PIPELINE).stage(STAGE).active
        assert version is not None
        model = f"{STAGE}:{version}"
        topics = Topics(
            out=pipeline_results_topic(prefix, PIPELINE),
            ingress_replies=f"{prefix}.hostile.ingress-replies",
            stage_replies=f"{prefix}.hostile.stage-replies",
            pipeline_dlq=pipeline_dlq_topic(prefix, PIPELINE),
            model_dlq=model_dlq_topic(prefix, STAGE, version),
        )
        create_topics(stack.bootstrap, [topics.ingress_replies, topics.stage_replies], PARTITIONS)
        planned = (_traffic("ingress", topics.ingress_replies, valid=(8, 4, 8)),
                   _traffic("stage", topics.stage_replies, valid=(4, 4, 4)))  # fmt: skip
        ingress = _produce(stack.bootstrap, pipeline_ingress_topic(prefix, PIPELINE), planned[0])
        direct = _produce(stack.bootstrap, model_input_topic(prefix, STAGE, version), planned[1])
        refused = len(planned[0]) + len(planned[1]) - len(ingress) - len(direct)
        seen = _collect(stack.bootstrap, topics, ingress, direct)
        after = stack.processes()
        alive = {name: _alive(pid) for name, pid in after.items()}
        failure = stack.failure
    restarted = sorted(n for n in pids if after.get(n) != pids[n] or not alive.get(n))
    problems = [("process", f"{n}: pid {pids[n]} -> {after.get(n)}, alive={alive.get(n)}")
                for n in restarted]  # fmt: skip
    problems += [("process", f"stack failed: {failure}")] if failure else []
    problems += _check_results(ingress, seen.results, "results topic")
    problems += _check_results(_replied(ingress), seen.ingress_replies, "ingress reply-to")
    problems += _check_results(_replied(direct), seen.stage_replies, "stage reply-to")
    problems += _check_pipeline_dlq(ingress, seen.pipeline_dlq)
    problems += _check_model_dlq(ingress, direct, seen.model_dlq, model)
    with capsys.disabled():
        took = time.monotonic() - started
        print(f"\n{_summary(ingress, direct, refused, seen, len(restarted), took)}")
    by_kind = Counter(kind for kind, _ in problems)
    shown = "\n".join(text for _, text in problems[:60])
    noise = "\n".join(lines.alarming()[-30:])
    assert not problems, (
        f"{len(problems)} problem(s), by kind {dict(by_kind)}:\n{shown}\n--- child output:\n{noise}"
    )


# --- traffic -------------------------------------------------------------------------------


def _traffic(target: Target, reply_to: str, valid: tuple[int, int, int]) -> list[Sent]:
    """Valid requests before, between and after the hostile ones (the 101 MB one in the middle)."""
    hostile = messages(target, reply_to, STAGE, COPIES)
    huge = [s for s in hostile if s.kind == HUGE]
    rest = [s for s in hostile if s.kind != HUGE]
    half = len(rest) // 2
    before, middle, after = (
        [valid_request(f"v-{target[0]}-{part}-{i}", ("en", "es")[i % 2], target, reply_to)
         for i in range(count)]
        for part, count in zip(("before", "middle", "after"), valid, strict=True)
    )  # fmt: skip
    return [*before, *rest[:half], *huge, *middle, *rest[half:], *after]


def _produce(bootstrap: str, topic: str, sent: list[Sent]) -> list[Sent]:
    """In order; a record over the producers' 32 MiB limit through a producer that allows it.
    What the broker took: all of it, less what it refused at the edge (see the module doc)."""
    chunk: list[Sent] = []
    taken: list[Sent] = []
    for s in sent:
        if len(s.value or b"") < MAX_MESSAGE_BYTES:
            chunk.append(s)
            continue
        produce_all(bootstrap, topic, _records(chunk))
        taken += chunk
        chunk = []
        taken += [s] if _produce_huge(bootstrap, topic, s) else []
    produce_all(bootstrap, topic, _records(chunk))
    return taken + chunk


def _records(sent: list[Sent]) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    return [(s.key, s.value, s.headers) for s in sent]  # type: ignore[misc]  # null values too


def _produce_huge(bootstrap: str, topic: str, s: Sent) -> bool:
    """Whether the broker took ``s``: the embedded one must, Apache Kafka must refuse it."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 128 << 20,
                         "receive.message.max.bytes": 256 << 20})  # fmt: skip
    errors: list[KafkaError] = []
    producer.produce(topic, s.value, s.key, headers=s.headers,
                     on_delivery=lambda e, _m: errors.append(e) if e else None)  # fmt: skip
    assert producer.flush(60) == 0, f"{s.rid} was not delivered"
    if broker_engine() == "kafka":  # the topic's max.message.bytes, enforced at produce time
        assert [e.code() for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE], (s.rid, errors)
        return False
    assert not errors, f"the broker refused {s.rid}: {errors}"
    return True


# --- what came back ------------------------------------------------------------------------


def _collect(bootstrap: str, topics: Topics, ingress: list[Sent], direct: list[Sent]) -> Seen:
    """Read every output topic until all that is expected arrived, or the time is up (what is
    missing then is reported by the checks)."""
    deadline = time.monotonic() + WAIT_S
    seen = Seen()
    waits: list[tuple[str, list[Message], set[str], Callable[[Message], str]]] = [
        (topics.out, seen.results, {s.rid for s in ingress if s.answered}, _key),
        (topics.ingress_replies, seen.ingress_replies, {s.rid for s in _replied(ingress)}, _key),
        (topics.stage_replies, seen.stage_replies, {s.rid for s in _replied(direct)}, _key),
        (topics.pipeline_dlq, seen.pipeline_dlq, {s.rid for s in ingress if s.dlq_stage}, _tag),
        (topics.model_dlq, seen.model_dlq, _model_dlq_ids(ingress, direct), _tag),
    ]
    for topic, into, wanted, ident in waits:
        collector = Collector(bootstrap, topic, PARTITIONS)
        try:
            # at least a few seconds each: once one wait ran out, the others still read all there is
            collector.until(_has_all(wanted, ident), max(5.0, deadline - time.monotonic()))
        except TimeoutError:
            pass  # reported as missing, with the ids
        finally:
            into.extend(collector.messages)
            collector.close()
    return seen


def _has_all(wanted: set[str], ident: Callable[[Message], str]) -> Callable[[list[Message]], bool]:
    found: set[str] = set()
    read = [0]

    def done(messages: list[Message]) -> bool:  # incremental: called after every poll
        found.update(ident(m) for m in messages[read[0] :])
        read[0] = len(messages)
        return wanted <= found

    return done


def _model_dlq_ids(ingress: list[Sent], direct: list[Sent]) -> set[str]:
    """Dead letters the stage writes: what it was sent directly (tagged), and the router's
    dispatches of ingress requests it refused (keyed by request id, no tag)."""
    routed = {f"key:{s.rid}" for s in ingress if s.dlq_stage == STAGE}
    return {s.rid for s in direct if s.dlq_stage} | routed


def _replied(sent: list[Sent]) -> list[Sent]:
    return [s for s in sent if s.answered and s.reply_to]


def _key(msg: Message) -> str:
    key = msg.key()
    return key.decode("utf-8", "replace") if key else ""


def _tag(msg: Message) -> str:
    tag = _header(msg, TAG)
    return tag.decode() if tag is not None else f"key:{_key(msg)}"


def _header(msg: Message, name: str) -> bytes | None:
    found = None
    for key, value in msg.headers() or []:
        if key == name:
            found = value
    return found


def _code(msg: Message) -> tuple[str, bool]:
    """A result's or reply's error code ("ok" without one), and whether it holds a language."""
    try:
        return _read_code(msg)
    except Exception as exc:  # reported as a wrong code, with the others
        return f"unreadable: {exc}", False


def _read_code(msg: Message) -> tuple[str, bool]:
    if _header(msg, "content-type") == b"application/json":
        body = json.loads(msg.value() or b"{}")
        outputs = {o.get("name") for o in body.get("outputs", [])}
        return str(body.get("code", "ok" if "outputs" in body else "?")), "language" in outputs
    envelope = decode_envelope(msg.value() or b"")
    code = envelope.error.code if envelope.error is not None else "ok"
    return code, "language" in envelope.fields


# --- checks --------------------------------------------------------------------------------


def _by(messages: Iterable[Message], ident: Callable[[Message], str]) -> dict[str, list[Message]]:
    grouped: dict[str, list[Message]] = defaultdict(list)
    for msg in messages:
        grouped[ident(msg)].append(msg)
    return grouped


def _check_results(sent: list[Sent], got: list[Message], where: str) -> list[Problem]:
    """One result per request id, with the expected code (a language when it succeeded)."""
    problems = []
    by_id = _by(got, _key)
    expected = {s.rid: s for s in sent if s.answered}
    for rid, s in expected.items():
        codes = [_code(m) for m in by_id.get(rid, [])]
        if not codes:
            problems.append((s.kind, f"{where}: no result for {s.kind} {rid} (want {s.code})"))
        elif len(codes) > 1 or any(c != s.code or (c == "ok" and not lang) for c, lang in codes):
            problems.append((s.kind, f"{where}: {s.kind} {rid} got {codes}, want {s.code}"))
    extra = sorted(set(by_id) - set(expected))
    problems += [("unexpected", f"{where}: result keyed {k[:60]!r}") for k in extra if k]
    return problems


def _check_pipeline_dlq(ingress: list[Sent], got: list[Message]) -> list[Problem]:
    problems = []
    by_tag = _by(got, _tag)
    for s in ingress:
        records = by_tag.pop(s.rid, [])
        if s.dlq_stage is None:
            if records:
                problems.append((s.kind, f"pipeline DLQ: {s.kind} {s.rid} was dead-lettered"))
            continue
        problems += _check_dead_letter("pipeline DLQ", s, records, stage=s.dlq_stage)
    problems += [("unexpected", f"pipeline DLQ: record {tag[:60]!r}") for tag in by_tag]
    return problems


def _check_model_dlq(
    ingress: list[Sent], direct: list[Sent], got: list[Message], model: str
) -> list[Problem]:
    problems = []
    by_tag = _by(got, _tag)
    for s in direct:
        records = by_tag.pop(s.rid, [])
        if s.dlq_stage is None:
            if records:
                problems.append((s.kind, f"{model} DLQ: {s.kind} {s.rid} was dead-lettered"))
            continue
        problems += _check_dead_letter(f"{model} DLQ", s, records, model=model)
    for s in ingress:  # what the router sent the stage, which the stage refused
        records = by_tag.pop(f"key:{s.rid}", [])
        if s.dlq_stage == STAGE and not records:
            problems.append((s.kind, f"{model} DLQ: no dead letter of the dispatch of {s.rid}"))
        for record in records:
            code = _header(record, "dlq-error-code")
            if s.dlq_stage != STAGE or code != s.code.encode():
                problems.append((s.kind, f"{model} DLQ: dispatch of {s.rid}: code {code!r}"))
    problems += [("unexpected", f"{model} DLQ: record {tag[:60]!r}") for tag in by_tag]
    return problems


def _check_dead_letter(
    where: str, s: Sent, records: list[Message], *, stage: str | None = None,
    model: str | None = None,
) -> list[Problem]:  # fmt: skip
    """The original bytes (or their start, with the size and digest of the whole) and why."""
    if not records:
        return [(s.kind, f"{where}: no dead letter of {s.kind} {s.rid} (want {s.code})")]
    record, original = records[0], s.value or b""
    value = record.value() or b""
    truncated = _header(record, "dlq-truncated")
    wrong = []
    if truncated is None and value != original:
        wrong.append(f"value of {len(value)} bytes is not the {len(original)} sent")
    if truncated is not None and not (
        truncated == str(len(original)).encode()
        and _header(record, "dlq-sha256") == hashlib.sha256(original).hexdigest().encode()
        and original.startswith(value)
        and len(original) > MAX_MESSAGE_BYTES
    ):
        wrong.append(f"truncated copy: dlq-truncated={truncated!r}, {len(value)} bytes kept")
    want = {"dlq-error-code": s.code, "dlq-stage": stage, "dlq-model": model}
    for name, expected in want.items():
        actual = _header(record, name)
        if expected is not None and actual != expected.encode():
            wrong.append(f"{name}={actual!r}, want {expected!r}")
    if not _header(record, "dlq-error"):
        wrong.append("no dlq-error")
    if _key(record) != (s.rid if s.answered else ""):
        wrong.append(f"key {_key(record)[:40]!r}")
    return [(s.kind, f"{where}: {s.kind} {s.rid}: {w}") for w in wrong]


# --- the figures ---------------------------------------------------------------------------


def _summary(
    ingress: list[Sent], direct: list[Sent], refused: int, seen: Seen, restarts: int, took: float
) -> str:
    sent = [*ingress, *direct]
    hostile = [s for s in sent if s.kind != "valid"]
    kinds = Counter(s.kind for s in hostile)
    by_kind = " ".join(f"{k.name}={kinds[k.name]}" for k in KINDS)
    truncated = sum(_header(m, "dlq-truncated") is not None
                    for m in [*seen.pipeline_dlq, *seen.model_dlq])  # fmt: skip
    codes = Counter(_code(m)[0] for m in seen.results)
    return (
        f"hostile stream: sent {len(sent)} = {len(sent) - len(hostile)} valid + {len(hostile)} "
        f"hostile (ingress {sum(s.target == 'ingress' for s in hostile)}, stage "
        f"{sum(s.target == 'stage' for s in hostile)}) by kind: {by_kind}; "
        f"{refused} refused by the broker at the edge, not sent; results "
        f"{len(seen.results)} on .out ({dict(sorted(codes.items()))}), "
        f"{len(seen.ingress_replies)} on the ingress reply-to, {len(seen.stage_replies)} stage "
        f"replies; dead letters {len(seen.pipeline_dlq)} pipeline + {len(seen.model_dlq)} "
        f"model ({truncated} truncated); restarts {restarts}; {took:.1f} s"
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
