"""Audit records: JSON round trips, the discriminated kinds, stable input digests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from modelyard.audit import (
    HopRecord,
    RequestRecord,
    decode_audit,
    digest_fields,
    encode_audit,
    encode_audit_values,
    utc,
)
from modelyard.audit.waterfall import render_waterfall
from modelyard.errors import DecodeError


def _hop(**overrides: object) -> HopRecord:
    base: dict[str, object] = {
        "request_id": "r1",
        "pipeline": "docs",
        "caller": "alice",
        "trace_id": "ab" * 16,
        "outcome": "ok",
        "stage": "ocr",
        "model": "ocr",
        "version": "2",
        "role": "active",
        "dispatched_at": utc(1_700_000_000.0),
        "finished_at": utc(1_700_000_000.25),
        "latency_ms": 250.0,
        "input_digest": digest_fields({"image": [b"png"]}),
    }
    return HopRecord.model_validate({**base, **overrides})


def test_hop_and_request_records_round_trip_by_kind() -> None:
    hop = _hop()
    request = RequestRecord(
        request_id="r1",
        pipeline="docs",
        outcome="deadline",
        error="past its deadline",
        spec_version=1,
        received_at=utc(1.0),
        finished_at=utc(2.0),
        latency_ms=1000.0,
        served_by={"ocr": "ocr:2"},
        skipped=("translate",),
        input_digest="0" * 64,
    )
    assert decode_audit(encode_audit(hop)) == hop
    assert decode_audit(encode_audit(request)) == request
    assert b'"kind":"hop"' in encode_audit(hop)


def test_digest_is_stable_and_sensitive_to_content() -> None:
    a = {"x": np.arange(3, dtype=np.float32)}
    assert digest_fields(a) == digest_fields({"x": np.arange(3, dtype=np.float32)})
    assert digest_fields(a) != digest_fields({"x": np.arange(3, dtype=np.float64)})


@pytest.mark.parametrize("value", [b"not json", b'{"kind": "hop"}', b'{"kind": "other"}'])
def test_invalid_records_raise_decode_error(value: bytes) -> None:
    with pytest.raises(DecodeError, match="invalid audit record"):
        decode_audit(value)


def test_role_is_checked() -> None:
    with pytest.raises(ValueError, match="role"):
        _hop(role="primary")


def test_fast_encoding_reads_back_as_the_models() -> None:
    hop = {
        "request_id": "r1", "pipeline": "docs", "caller": None, "trace_id": None,
        "outcome": "ok", "error": None, "stage": "ocr", "model": "ocr", "version": "2",
        "role": "shadow", "shadow": True, "attempt": 0, "span_id": "ab" * 8,
        "dispatched_at": 1_700_000_000.5, "finished_at": 1_700_000_001.0, "latency_ms": 500.0,
        "input_digest": "0" * 64, "output_digest": None,
    }  # fmt: skip
    decoded = decode_audit(encode_audit_values("hop", hop))
    assert isinstance(decoded, HopRecord)
    assert decoded.dispatched_at == utc(1_700_000_000.5)
    assert decoded.role == "shadow"
    assert decoded.span_id == "ab" * 8
    request = {
        "request_id": "r1", "pipeline": "docs", "caller": "bob", "trace_id": None,
        "outcome": "deadline", "error": "late", "spec_version": 1, "received_at": 1.0,
        "finished_at": 2.0, "latency_ms": 1000.0, "served_by": {"ocr": "ocr:2"},
        "skipped": ["translate"], "input_digest": "0" * 64,
    }  # fmt: skip
    decoded_request = decode_audit(encode_audit_values("request", request))
    assert isinstance(decoded_request, RequestRecord)
    assert decoded_request.skipped == ("translate",)
    with pytest.raises(DecodeError):  # a key the model does not know fails loudly
        decode_audit(encode_audit_values("hop", {**hop, "surprise": 1}))


def _hop_json(**overrides: object) -> bytes:
    data = json.loads(encode_audit(_hop()))
    data.update(overrides)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "value",
    [
        b"[" * 100_000,  # json.loads raised RecursionError
        _hop_json(latency_ms=float("nan")),  # the waterfall could not draw its bar
        _hop_json(latency_ms=float("inf")),
        _hop_json().replace(b'"latency_ms": 250.0', b'"latency_ms": 1e400'),
        _hop_json(stage="\ud800"),  # a lone surrogate: no terminal or store takes it
    ],
)
def test_values_that_are_no_usable_record_are_decode_errors(value: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_audit(value)


def test_a_decoded_record_draws_as_a_waterfall() -> None:
    record = decode_audit(_hop_json(latency_ms=1e300, attempt=2))
    assert render_waterfall([record])
