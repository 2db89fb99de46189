"""The capture policy: what an audit record keeps of a pipeline's data, and what it hides."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from modelyard.audit import Payload, encode_payload, redacted_value
from modelyard.graph import parse_spec
from modelyard.graph.spec import SpecError
from modelyard.wire.envelope import pack_fields, unpack_fields

SPEC = """
pipeline: p
version: 1
inputs: {card: {datatype: BYTES, shape: [1]}, text: {datatype: BYTES, shape: [1]}}
stages:
  a: {model: m, inputs: {x: request.card, y: request.text}}
  b: {model: n, inputs: {z: a.secret, w: a.plain}}
outputs: {out: b.label, leak: a.secret, card: request.card}
audit: {payloads: full, redact: [request.card, a.secret], max_bytes: 100}
"""


def _payload(raw: bytes) -> Payload:
    return Payload.model_validate_json(raw)


def test_a_redacted_value_is_hidden_wherever_it_flows() -> None:
    capture = parse_spec(SPEC).capture
    assert capture.full
    assert capture.max_bytes == 100
    assert capture.inputs == {"a": frozenset({"x"}), "b": frozenset({"z"})}
    assert capture.outputs == {"a": frozenset({"secret"}), "b": frozenset()}
    assert capture.result == frozenset({"leak", "card"})


def test_the_default_policy_keeps_digests_of_stage_data_only() -> None:
    spec = parse_spec(SPEC.replace("audit: {payloads: full, redact: [request.card, a.secret], "
                                   "max_bytes: 100}", ""))  # fmt: skip
    assert not spec.capture.full
    assert spec.capture.result == frozenset()


def test_a_redaction_must_name_a_request_field_or_a_stage() -> None:
    with pytest.raises(SpecError, match=r"audit\.redact\[0\]: unknown stage 'nope'"):
        parse_spec(SPEC.replace("request.card, a.secret", "nope.secret"))
    with pytest.raises(SpecError, match="unknown request field 'pin'"):
        parse_spec(SPEC.replace("request.card, a.secret", "request.pin"))


def test_a_redacted_field_keeps_only_its_own_digest_and_the_payload_digest_is_unchanged() -> None:
    fields = {"card": ["4111 1111 1111 1111"], "text": ["hello"]}
    packed = pack_fields(fields)
    payload = _payload(encode_payload(packed, fields, keep=True, max_bytes=1000,
                                      redact=frozenset({"card"})))  # fmt: skip
    assert payload.digest == hashlib.sha256(packed).hexdigest()  # the hop's input digest
    assert payload.bytes_ == len(packed)
    assert payload.fields is not None
    kept = unpack_fields(base64.b64decode(payload.fields))
    assert kept["text"] == ["hello"]
    assert kept["card"] == redacted_value("card", ["4111 1111 1111 1111"])
    assert "4111" not in json.dumps(kept)
    # equal values give equal digests: equality is provable without the data
    assert redacted_value("card", ["4111 1111 1111 1111"]) != redacted_value("card", ["4111"])


def test_a_payload_over_the_limit_or_under_a_digest_policy_keeps_its_digest_only() -> None:
    packed = pack_fields({"text": ["x" * 500]})
    for keep, limit in ((True, 100), (False, 10_000)):
        payload = _payload(encode_payload(packed, keep=keep, max_bytes=limit))
        assert payload.fields is None
        assert payload.digest == hashlib.sha256(packed).hexdigest()
        assert payload.bytes_ == len(packed)
