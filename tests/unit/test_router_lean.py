"""What the router's lean path relies on: fields packed once give the same dispatch bytes and
digest, stage outputs passed on packed give the same bytes, and audit times read as before."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import msgpack
import numpy as np
import pytest
from modelyard.audit import (
    digest_fields,
    digest_packed,
    encode_audit_values,
    encode_hop_record,
    encode_request_record,
)
from modelyard.audit.records import _iso
from modelyard.control import ControlState
from modelyard.control.routing import PipelineRouting
from modelyard.errors import DecodeError
from modelyard.wire import Envelope, decode_envelope, encode_envelope
from modelyard.wire.envelope import (
    NDARRAY_EXT,
    encode_envelope_fields,
    pack_fields,
    unpack_arrays,
)

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


@pytest.mark.parametrize("text", [None, 'quote " ünïcode'])
def test_a_request_record_from_its_template_is_the_generic_encoding(text: str | None) -> None:
    values = {
        "request_id": "r1", "pipeline": "p", "caller": text, "trace_id": None, "outcome": "ok",
        "error": text, "spec_version": 3, "received_at": 1767225600.25,
        "finished_at": 1767225601.5, "latency_ms": 1250.0, "served_by": {"a": "m:1", "b": "n:2"},
        "skipped": ["c", "d"], "input_digest": "a" * 64,
    }  # fmt: skip
    assert encode_request_record(**values) == encode_audit_values("request", values)  # type: ignore[arg-type]
