"""What the router's lean path relies on: fields packed once give the same dispatch bytes and
digest, stage outputs passed on packed give the same bytes, and audit times read as before."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from modelyard.audit import (
    Payload,
    RequestRecord,
    decode_audit,
    digest_fields,
    digest_packed,
    encode_audit_values,
    encode_hop_record,
    encode_payload,
    encode_request_record,
)
from modelyard.audit.records import _iso
from modelyard.control import ControlState, StageRouting
from modelyard.control.routing import PipelineRouting
from modelyard.errors import DecodeError
from modelyard.graph import load_spec, parse_spec
from modelyard.graph.graph import frontier, resolve
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.wire import Envelope, decode_envelope, encode_envelope
from modelyard.wire.envelope import (
    NDARRAY_EXT,
    encode_envelope_fields,
    encode_reply_envelope,
    pack_fields,
    unpack_arrays,
)

from tests.fuzz.fakes import FakeProducer

ENVELOPES = [
    Envelope("r1", {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "t": ["a", "b"]}),
    Envelope("fields", {"fields": 1}, "p", "s", "alice", 1767225600000),
    Envelope("x" * 300, {}, model="m", version="2"),
]


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_fields_packed_once_give_the_same_envelope_and_digest(envelope: Envelope) -> None:
    packed = pack_fields(envelope.fields)
    assert encode_envelope_fields(envelope, packed) == encode_envelope(envelope)
    assert digest_packed(packed) == digest_fields(envelope.fields)


def test_outputs_left_packed_give_the_same_bytes_and_decode_where_read() -> None:
    reply = Envelope("r1", {"x": np.arange(4, dtype=np.int64), "t": np.array([b"a", b"b"])})
    value = encode_envelope(reply)
    kept = decode_envelope(value, arrays=False)
    assert all(isinstance(v, msgpack.ExtType) for v in kept.fields.values())
    assert encode_envelope(kept) == value
    assert digest_fields(kept.fields) == digest_fields(decode_envelope(value).fields)
    arrays = unpack_arrays(kept.fields)
    assert np.array_equal(arrays["x"], reply.fields["x"])
    assert list(arrays["t"]) == [b"a", b"b"]


@pytest.mark.parametrize(
    "payload",
    [[b"FP32", [3], b"\0" * 8], [b"NOPE", [1], b"\0"], ["BYTES", [2], [b"a"]], ["FP32", [-1], b""]],
)
def test_a_malformed_array_is_refused_even_when_left_packed(payload: list[object]) -> None:
    ext = msgpack.ExtType(NDARRAY_EXT, msgpack.packb(payload))
    value = msgpack.packb({"v": 1, "id": "r1", "fields": {"x": ext}})
    with pytest.raises(DecodeError):
        decode_envelope(value, arrays=False)


@pytest.mark.parametrize("ts", [0.0, 1.5, 1767225600.0, 1767225600.9999996, 1767225600.123456])
def test_audit_times_read_as_the_datetime_they_were(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, UTC)
    parsed = datetime.fromisoformat(_iso(ts).replace("Z", "+00:00"))
    assert math.isclose(parsed.timestamp(), expected.timestamp(), abs_tol=1e-6)


def test_routing_lookups_of_unknown_names_build_nothing_per_call() -> None:
    state = ControlState({"p": PipelineRouting(pipeline="p")})
    assert state.stage("p", "a") is state.stage("p", "b")
    assert state.pipeline("q").pipeline == "q"


@pytest.mark.parametrize("text", [None, "plain", 'quote " and \\ back', "ünïcode \u2028 \n"])
def test_a_hop_record_from_its_template_is_the_generic_encoding(text: str | None) -> None:
    values = {
        "request_id": "r1", "pipeline": "p", "caller": text, "trace_id": "ab" * 16,
        "outcome": "ok", "error": text, "stage": "s", "model": "m", "version": "1",
        "role": "canary", "shadow": True, "attempt": 2, "span_id": text,
        "dispatched_at": 1767225600.25, "finished_at": 1767225601.5, "latency_ms": 12.5,
        "input_digest": "a" * 64, "output_digest": text,
    }  # fmt: skip
    assert encode_hop_record(**values) == encode_audit_values("hop", values)  # type: ignore[arg-type]
    payload = encode_payload(pack_fields({"t": [text or ""]}), keep=True, max_bytes=1 << 20)
    with_payloads = encode_hop_record(**values, input=payload, output=None)  # type: ignore[arg-type]
    generic = {**values, "input": json.loads(payload), "output": None}
    assert with_payloads == encode_audit_values("hop", generic)
    assert decode_audit(with_payloads).input == Payload.model_validate_json(payload)  # type: ignore[union-attr]
    observed = {"label": text or "", "scores.0": 0.25, "input.text": 12.0}
    with_observed = encode_hop_record(**values, observed=observed)  # type: ignore[arg-type]
    assert with_observed == encode_audit_values("hop", {**values, "observed": observed})
    both = encode_hop_record(**values, input=payload, output=None, observed=observed)  # type: ignore[arg-type]
    assert both == encode_audit_values("hop", {**generic, "observed": observed})
    assert decode_audit(both).observed == observed  # type: ignore[union-attr]


@pytest.mark.parametrize("text", [None, 'quote " ünïcode'])
def test_a_request_record_from_its_template_is_the_generic_encoding(text: str | None) -> None:
    values = {
        "request_id": "r1", "pipeline": "p", "caller": text, "trace_id": None, "outcome": "ok",
        "error": text, "spec_version": 3, "received_at": 1767225600.25,
        "finished_at": 1767225601.5, "latency_ms": 1250.0, "served_by": {"a": "m:1", "b": "n:2"},
        "skipped": ["c", "d"], "input_digest": "a" * 64, "principal": text, "auth": "token",
    }  # fmt: skip
    result = encode_payload(pack_fields({"label": ["pos"]}), keep=True, max_bytes=1 << 20)
    templated = encode_request_record(**values, result=result)  # type: ignore[arg-type]
    assert templated == encode_audit_values("request", {**values, "result": json.loads(result)})
    record = decode_audit(templated)
    assert isinstance(record, RequestRecord)
    assert record.result is not None
    assert record.result.digest == hashlib.sha256(pack_fields({"label": ["pos"]})).hexdigest()


def test_each_state_of_the_stage_graph_is_worked_out_as_frontier_and_resolve_do() -> None:
    spec = load_spec(ROOT / "pipelines" / "docs.yaml")
    names = list(spec.stages)
    for bits in itertools.product((0, 1, 2), repeat=len(names)):  # not run, ran, skipped
        done = frozenset(n for n, b in zip(names, bits, strict=True) if b == 1)
        skipped = frozenset(n for n, b in zip(names, bits, strict=True) if b == 2)
        step = spec.moves.step(done, skipped)
        moves = frontier(spec.stages, done, skipped)
        assert (step.run, step.skip) == (moves.run, moves.skip)
        for name in step.run:
            inputs = spec.stages[name].inputs.items()
            assert step.reads[name] == tuple((f, resolve(s, done, skipped)) for f, s in inputs)
        outputs = tuple((n, resolve(s, done, skipped)) for n, s in spec.outputs.items())
        assert spec.moves.outputs(done, skipped) == outputs
        assert spec.moves.step(done, skipped) is step  # once per state


class _Message:
    def __init__(self, topic: str, value: bytes, headers: list[tuple[str, bytes]], at: int):
        self._topic, self._value, self._headers, self._offset = topic, value, headers, at

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"r1"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def error(self) -> None:
        return None


class _Clients:
    def __init__(self) -> None:
        self.made = FakeProducer()

    def consumer(self, _config: dict[str, Any]) -> None:
        return None

    def producer(self, _config: dict[str, Any]) -> FakeProducer:
        return self.made


class _Routing:
    state = ControlState(
        {"chain": PipelineRouting(pipeline="chain", stages={
            "s0": StageRouting(active="1"), "s1": StageRouting(active="1")})}
    )  # fmt: skip


def test_fields_sent_on_unchanged_are_packed_once_and_digested_as_before() -> None:
    spec = parse_spec(CHAIN, "chain.yaml")
    clients = _Clients()
    router = PipelineRouter(spec, _Routing(), RouterOptions("none:9092"), clients=clients)
    router.outbox.assign([(router._ingress, 0), (router._inbox, 0)])
    request = Envelope("r1", {"x": np.arange(3, dtype=np.float32)})
    messages = [_Message(router._ingress, encode_envelope(request), [], 0)]
    for at in range(1, 3):  # each stage replies with its input as its output
        router.handle(router.outbox.admit(messages))
        topic, _key, value, headers = clients.made.records[-1]
        assert topic.startswith("yard.m.noop.")
        sent = decode_envelope(value)
        assert encode_envelope(sent) == value  # the bytes a plain encoding gives
        reply = encode_reply_envelope(sent, {**sent.fields}, "noop", "1")
        meta = [(k, v) for k, v in headers if k in ("stage", "attempt")]
        messages = [_Message(router._inbox, reply, meta, at)]
    router.handle(router.outbox.admit(messages))
    audit = [json.loads(r.value) for r in clients.made.records if r.topic == "yard.audit"]
    hops = {r["stage"]: r for r in audit if r["kind"] == "hop"}
    (record,) = [r for r in audit if r["kind"] == "request"]
    digest = digest_fields(request.fields)
    assert hops["s0"]["input_digest"] == record["input_digest"] == digest
    assert hops["s0"]["output_digest"] == hops["s1"]["input_digest"] == digest
    assert hops["s1"]["output_digest"] == digest


CHAIN = """
pipeline: chain
version: 1
inputs: {x: {datatype: FP32, shape: [-1]}}
stages:
  s0: {model: noop, inputs: {x: request.x}}
  s1: {model: noop, inputs: {x: s0.x}}
outputs: {x: s1.x}
"""
ROOT = Path(__file__).resolve().parents[2]
