"""The router service on the real broker, with real `modelyard serve` stages (Python models)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from confluent_kafka import Message
from modelyard.audit import HopRecord, RequestRecord, decode_audit
from modelyard.broker import create_topics
from modelyard.control import Shadow, StageRouting
from modelyard.graph import parse_spec
from modelyard.repository.build import BuildContext
from modelyard.router.live import LiveRequest
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.shadows.auditor import ShadowAuditor
from modelyard.telemetry.hooks import Hooks
from modelyard.topics import (
    audit_topic,
    model_input_topic,
    pipeline_dlq_topic,
    pipeline_inbox_topic,
    pipeline_ingress_topic,
    pipeline_results_topic,
    pipeline_shadow_topic,
)
from modelyard.wire import Envelope, decode_envelope, encode_envelope

from tests.support.kafka_io import Collector, produce_all
from tests.support.models import write_shout_version
from tests.support.routing import StaticRouting
from tests.support.stage import StageProcess

pytestmark = pytest.mark.integration

PARTITIONS = 2
SPEC = parse_spec(
    """
pipeline: tp
version: 3
inputs: {text: {datatype: BYTES, shape: [-1]}}
stages:
  first: {model: shout, inputs: {text: request.text}}
  second: {model: shout, inputs: {text: first.shout}, when: "request.text != 'skip'"}
outputs: {loud: [second.shout, first.shout]}
""",
    "tp.yaml",
)


class Stack:
    def __init__(self, prefix: str, bootstrap: str, routing: StaticRouting) -> None:
        self.prefix, self.bootstrap, self.routing = prefix, bootstrap, routing

    def topic(self, kind: str) -> str:
        return {
            "in": pipeline_ingress_topic,
            "out": pipeline_results_topic,
            "dlq": pipeline_dlq_topic,
            "shadow": pipeline_shadow_topic,
            "inbox": pipeline_inbox_topic,
        }[kind](self.prefix, "tp")

    def send(self, *requests: tuple[str, Any]) -> None:
        records = [
            (rid, value if isinstance(value, bytes) else _request(rid, value), [])
            for rid, value in requests
        ]
        produce_all(self.bootstrap, self.topic("in"), records)

    def collect(self, kind: str, done: Any, timeout: float = 60) -> list[Message]:
        partitions = 1 if kind == "audit" else PARTITIONS
        topic = audit_topic(self.prefix) if kind == "audit" else self.topic(kind)
        collector = Collector(self.bootstrap, topic, partitions)
        try:
            return collector.until(done, timeout)
        finally:
            collector.close()

    def shadow_hops(self, ids: set[str]) -> dict[str, HopRecord]:
        """The shadow hop record of each request, once the auditor wrote them all."""

        def shadow_hops(ms: list[Message]) -> dict[str, HopRecord]:
            records = (decode_audit(m.value()) for m in ms if m.key().decode() in ids)
            return {r.request_id: r for r in records if isinstance(r, HopRecord) and r.shadow}

        return shadow_hops(self.collect("audit", lambda ms: len(shadow_hops(ms)) == len(ids)))

    def results(self, ids: set[str]) -> dict[str, list[Envelope]]:
        messages = self.collect("out", lambda ms: ids <= {m.key().decode() for m in ms})
        found: dict[str, list[Envelope]] = {}
        for m in messages:
            found.setdefault(m.key().decode(), []).append(decode_envelope(m.value()))
        return {k: v for k, v in found.items() if k in ids}


class _ExplodingHooks(Hooks):
    """Raises for requests whose id starts with ``explode``: a stand-in for any bug that a
    message's content could trigger in the router's per-request code."""

    def route_started(self, live: LiveRequest) -> None:
        if live.request_id.startswith("explode"):
            raise RuntimeError(f"no check foresaw {live.request_id}")


def _role(message: Message) -> str:
    """Shadow replies carry `shadow: 1`; the router's copies of primaries `shadow-role`."""
    headers = dict(message.headers() or [])
    return "shadow" if headers.get("shadow") == b"1" else headers.get("shadow-role", b"").decode()


def _request(rid: str, text: str, **extra: Any) -> bytes:
    return encode_envelope(Envelope(rid, {"text": [text]}, **extra))


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = Path(tmp_path_factory.mktemp("models"))
    ctx = BuildContext(root=root, cache=root / ".cache")
    write_shout_version(ctx, "1")
    write_shout_version(ctx, "2")
    prefix = f"r-{uuid.uuid4().hex[:8]}"
    topics = [
        pipeline_ingress_topic(prefix, "tp"),
        pipeline_inbox_topic(prefix, "tp"),
        pipeline_results_topic(prefix, "tp"),
        pipeline_shadow_topic(prefix, "tp"),
    ]
    create_topics(broker, topics, partitions=PARTITIONS)
    create_topics(broker, [audit_topic(prefix), pipeline_dlq_topic(prefix, "tp")])
    create_topics(broker, [model_input_topic(prefix, "shout", v) for v in ("1", "2")])
    stages = [
        StageProcess(
            f"shout:{v}", root, "--bootstrap", broker, "--topic-prefix", prefix, "--no-grpc"
        )
        for v in ("1", "2")
    ]
    routing = StaticRouting("tp", first=StageRouting(active="1"), second=StageRouting(active="1"))
    options = RouterOptions(bootstrap=broker, prefix=prefix)
    router = PipelineRouter(SPEC, routing, options, hooks=_ExplodingHooks())
    auditor = ShadowAuditor(broker, "tp", prefix=prefix, ttl_s=2.0)
    try:
        for stage in stages:
            stage.wait_ready(60)
        router.start()
        auditor.start()
        assert router.wait_joined(60)
        assert auditor.wait_joined(60)
        yield Stack(prefix, broker, routing)
    finally:
        router.stop()
        auditor.stop()
        for stage in stages:
            stage.terminate()
    assert router.failure is None
    assert auditor.failure is None


@pytest.fixture(autouse=True)
def default_routing(stack: Stack) -> None:
    stack.routing.set(first=StageRouting(active="1"), second=StageRouting(active="1"))


def test_requests_walk_both_stages_and_each_result_names_its_versions(stack: Stack) -> None:
    ids = [f"walk-{i}" for i in range(40)]
    stack.send(*[(rid, f"hi {rid}") for rid in ids])
    results = stack.results(set(ids))
    for rid in ids:
        [result] = results[rid]
        assert result.error is None
        assert result.fields["loud"].tolist() == [f"HI {rid}".upper().encode()]
        assert result.served_by == {"first": "shout:1", "second": "shout:1"}
        assert result.pipeline == "tp"


def test_a_false_condition_skips_the_stage_and_the_output_falls_back(stack: Stack) -> None:
    stack.send(("skip-1", "skip"))
    [result] = stack.results({"skip-1"})["skip-1"]
    assert result.fields["loud"].tolist() == [b"SKIP"]
    assert result.served_by == {"first": "shout:1"}


def test_audit_has_a_hop_per_stage_and_a_record_per_request(stack: Stack) -> None:
    stack.send(("audit-1", "hello"))
    stack.results({"audit-1"})

    def records(ms: list[Message]) -> list[Any]:
        return [decode_audit(m.value()) for m in ms if m.key() == b"audit-1"]

    messages = stack.collect("audit", lambda ms: len(records(ms)) >= 3)
    hops = [r for r in records(messages) if isinstance(r, HopRecord)]
    [request] = [r for r in records(messages) if isinstance(r, RequestRecord)]
    assert sorted((h.stage, h.model, h.version, h.role, h.outcome) for h in hops) == [
        ("first", "shout", "1", "active", "ok"),
        ("second", "shout", "1", "active", "ok"),
    ]
    assert all(h.input_digest and h.output_digest for h in hops)
    assert all(h.finished_at >= h.dispatched_at for h in hops)
    assert request.served_by == {"first": "shout:1", "second": "shout:1"}
    assert (request.outcome, request.spec_version) == ("ok", 3)


def test_a_redelivered_reply_and_a_duplicate_request_give_one_result(stack: Stack) -> None:
    stack.send(("dup-1", "once"))
    stack.results({"dup-1"})
    inbox = stack.collect("inbox", lambda ms: sum(m.key() == b"dup-1" for m in ms) >= 2)
    replies = [
        (m.key().decode(), m.value(), m.headers() or []) for m in inbox if m.key() == b"dup-1"
    ]
    produce_all(stack.bootstrap, stack.topic("inbox"), replies)  # every reply, once more
    stack.send(("dup-1", "once"), ("dup-after", "later"))
    stack.results({"dup-after"})  # routed after the duplicates, on the same router
    assert len(stack.results({"dup-1"})["dup-1"]) == 1


def test_a_request_past_its_deadline_gets_a_deadline_error(stack: Stack) -> None:
    deadline = int((time.time() + 0.5) * 1000)
    stack.send(("late-1", _request("late-1", "slow:3000", deadline_ms=deadline)))
    [result] = stack.results({"late-1"})["late-1"]
    assert result.error is not None
    assert result.error.code == "deadline"
    assert "first" in result.error.message


def test_bad_input_is_dead_lettered_and_traffic_keeps_flowing(stack: Stack) -> None:
    garbage = b"\x00not msgpack"
    wrong_type = msgpack.packb({"v": 1, "id": "bad-type", "fields": {"text": [1.5]}})
    stack.send(
        ("bad-bytes", garbage), ("bad-type", wrong_type), ("boom-1", "boom"), ("ok-after", "fine")
    )
    results = stack.results({"bad-bytes", "bad-type", "boom-1", "ok-after"})
    codes = {rid: r[0].error.code if r[0].error else "ok" for rid, r in results.items()}
    assert codes == {
        "bad-bytes": "decode",
        "bad-type": "validation",
        "boom-1": "model",
        "ok-after": "ok",
    }
    assert results["boom-1"][0].error.stage == "first"  # type: ignore[union-attr]
    keys = {b"bad-bytes", b"bad-type", b"boom-1"}
    dlq = stack.collect("dlq", lambda ms: keys <= {m.key() for m in ms})
    by_key = {m.key(): m for m in dlq}
    assert by_key[b"bad-bytes"].value() == garbage
    assert by_key[b"bad-type"].value() == wrong_type
    # the model's refusal: the caller's bytes, marked with the stage that refused them
    assert by_key[b"boom-1"].value() == _request("boom-1", "boom")
    assert _headers(by_key[b"boom-1"])[:2] == (b"model", b"first")


def _headers(message: Message) -> tuple[bytes | None, bytes | None]:
    found = dict(message.headers() or [])
    return found.get("dlq-error-code"), found.get("dlq-stage")


def _ext(datatype: str, shape: list[int], data: Any) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb([datatype, shape, data]))


def test_values_that_once_crashed_the_router_get_errors_and_traffic_keeps_flowing(
    stack: Stack,
) -> None:
    def envelope(rid: str, text: Any, **extra: Any) -> bytes:
        return msgpack.packb({"v": 1, "id": rid, "fields": {"text": text}, **extra})

    hostile = {
        "none-text": (envelope("none-text", [None]), "validation"),
        "map-text": (envelope("map-text", [{"a": 1}]), "validation"),
        "none-ext": (envelope("none-ext", _ext("BYTES", [1], [None])), "decode"),
        "huge-caller": (envelope("huge-caller", ["hi"], caller="c" * (1 << 20)), "decode"),
        # over the stage's 64 KiB limit, under the router's: the stage's refusal comes back
        "too-large": (envelope("too-large", ["x" * 70_000]), "too_large"),
    }
    stack.send(*[(rid, value) for rid, (value, _) in hostile.items()], ("fine-after", "fine"))
    results = stack.results({*hostile, "fine-after"})
    codes = {rid: r[0].error.code if r[0].error else "ok" for rid, r in results.items()}
    assert codes == {**{rid: code for rid, (_, code) in hostile.items()}, "fine-after": "ok"}
    assert results["too-large"][0].error.stage == "first"  # type: ignore[union-attr]
    keys = {rid.encode() for rid in hostile}
    dlq = {m.key(): m for m in stack.collect("dlq", lambda ms: keys <= {m.key() for m in ms})}
    for rid, (value, code) in hostile.items():
        assert dlq[rid.encode()].value() == value  # the caller's bytes, as sent
        stage = b"first" if rid == "too-large" else b"router"
        assert _headers(dlq[rid.encode()]) == (code.encode(), stage)


def test_a_request_the_router_fails_on_unexpectedly_is_dead_lettered_and_answered(
    stack: Stack,
) -> None:
    stack.send(("explode-1", "boom?"), ("calm-after", "calm"))
    results = stack.results({"explode-1", "calm-after"})
    error = results["explode-1"][0].error
    assert error is not None
    assert error.code == "internal"
    assert "RuntimeError('no check foresaw explode-1')" in error.message
    assert results["calm-after"][0].error is None
    dlq = stack.collect("dlq", lambda ms: b"explode-1" in {m.key() for m in ms})
    [letter] = [m for m in dlq if m.key() == b"explode-1"]
    assert letter.value() == _request("explode-1", "boom?")
    assert _headers(letter) == (b"internal", b"router")


def test_shadow_replies_are_captured_and_never_served(stack: Stack) -> None:
    stack.routing.set(
        first=StageRouting(active="1"),
        second=StageRouting(active="1", shadow=Shadow(version="2", sample_rate=1.0)),
    )
    ids = {f"shadow-{i}" for i in range(10)}
    stack.send(*[(rid, rid) for rid in sorted(ids)])
    results = stack.results(ids)
    assert all(
        r[0].served_by == {"first": "shout:1", "second": "shout:1"} for r in results.values()
    )

    def pairs(ms: list[Message]) -> set[tuple[str, str]]:
        return {(m.key().decode(), _role(m)) for m in ms if m.key().decode() in ids}

    shadow = stack.collect("shadow", lambda ms: len(pairs(ms)) == 2 * len(ids))
    assert pairs(shadow) == {(rid, role) for rid in ids for role in ("primary", "shadow")}
    shadow_replies = [
        decode_envelope(m.value())
        for m in shadow
        if _role(m) == "shadow" and m.key().decode() in ids
    ]
    assert {(r.model, r.version, r.stage) for r in shadow_replies} == {("shout", "2", "second")}
    # the shadow auditor pairs them: one hop record per shadow run, compared with the primary
    hops = stack.shadow_hops(ids)
    assert {(h.stage, h.model, h.version, h.outcome, h.agrees) for h in hops.values()} == {
        ("second", "shout", "2", "ok", True)
    }
    assert all(h.input_digest for h in hops.values())
    assert all(h.finished_at >= h.dispatched_at for h in hops.values())


def test_a_stopped_shadow_never_holds_up_the_primary_path(stack: Stack) -> None:
    stack.routing.set(
        first=StageRouting(active="1", shadow=Shadow(version="9", sample_rate=1.0)),  # no worker
        second=StageRouting(active="1"),
    )
    ids = {f"noshadow-{i}" for i in range(10)}
    stack.send(*[(rid, rid) for rid in sorted(ids)])
    results = stack.results(ids)
    assert all(r[0].error is None for r in results.values())
    assert all(
        r[0].served_by == {"first": "shout:1", "second": "shout:1"} for r in results.values()
    )
    hops = stack.shadow_hops(ids)  # after the auditor's TTL: recorded as never answered
    assert {(h.stage, h.model, h.version, h.outcome) for h in hops.values()} == {
        ("first", "shout", "9", "no_reply")
    }


def test_an_oip_json_request_gets_an_oip_json_result_on_its_reply_to(stack: Stack) -> None:
    reply_to = f"{stack.prefix}.json-replies"
    create_topics(stack.bootstrap, [reply_to])
    body = {
        "id": "json-1",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}],
    }
    headers = [("content-type", b"application/json"), ("reply-to", reply_to.encode())]
    produce_all(
        stack.bootstrap, stack.topic("in"), [("json-1", json.dumps(body).encode(), headers)]
    )
    collector = Collector(stack.bootstrap, reply_to)
    try:
        [message] = collector.until(lambda ms: len(ms) >= 1, 60)
    finally:
        collector.close()
    reply = json.loads(message.value())
    assert dict(message.headers())["content-type"] == b"application/json"
    assert (reply["id"], reply["model_name"]) == ("json-1", "tp")
    assert reply["outputs"] == [{"name": "loud", "datatype": "BYTES", "shape": [1], "data": ["HI"]}]
    assert reply["parameters"]["served_by"] == {"first": "shout:1", "second": "shout:1"}
    [result] = stack.results({"json-1"})["json-1"]  # and the results topic has the envelope
    assert result.fields["loud"].tolist() == [b"HI"]
