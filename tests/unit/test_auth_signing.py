"""Signed Kafka requests: the canonical bytes, a test vector from openssl, every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import subprocess
from collections.abc import Mapping

import msgpack
import numpy as np
import pytest
from modelyard.auth import (
    CallerKey,
    CallerKeys,
    Principal,
    canonical_request,
    fields_digest_of,
    sign_request,
    verify_request,
)
from modelyard.errors import PermissionDeniedError, UnauthenticatedError
from modelyard.wire import Envelope, decode_envelope
from modelyard.wire.envelope import encode_envelope_fields, pack_fields
from modelyard.wire.oip_json import decode_oip_json
from pydantic import SecretStr

SECRET = bytes(range(32))


def secret(raw: bytes) -> SecretStr:
    return SecretStr(base64.b64encode(raw).decode())


ALICE = CallerKey(principal="alice", key_id="k-alice", key=secret(SECRET), pipelines=("docs",))
GATEWAY = CallerKey(
    principal="router", key_id="k-gw", key=secret(b"g" * 32), pipelines=("*",), may_act_for=True
)
CALLERS = CallerKeys([ALICE, GATEWAY])
FIELDS = {"text": np.array([b"hello"], dtype=object), "n": np.arange(3, dtype=np.int32)}
DEADLINE = 1767225600000


def signed(
    key: CallerKey = ALICE, caller: str | None = "alice", on_behalf: str | None = None,
    pipeline: str = "docs", fields: Mapping[str, object] = FIELDS,
) -> tuple[list[tuple[str, bytes]], bytes]:  # fmt: skip
    packed = pack_fields(fields)
    envelope = Envelope("r-1", {}, pipeline=pipeline, caller=caller, deadline_ms=DEADLINE)
    headers = sign_request(key, "r-1", pipeline, DEADLINE, hashlib.sha256(packed).hexdigest(),
                           caller=caller, on_behalf=on_behalf)  # type: ignore[arg-type]  # fmt: skip
    return headers, encode_envelope_fields(envelope, packed)


def verify(headers: list[tuple[str, bytes]], value: bytes, pipeline: str = "docs") -> Principal:
    return verify_request(headers, value, decode_envelope(value), CALLERS, pipeline=pipeline)


def test_the_canonical_bytes_are_seven_lines() -> None:
    assert (
        canonical_request(
            "r-1", "docs", deadline_ms=DEADLINE, caller="alice", auth=None, fields_digest="ab"
        )
        == b"v1\nr-1\ndocs\n1767225600000\nalice\n\nab"
    )
    assert (
        canonical_request(
            "r-1", "docs", deadline_ms=None, caller=None, auth="token", fields_digest="ab"
        )
        == b"v1\nr-1\ndocs\n\n\ntoken\nab"
    )
    with pytest.raises(ValueError, match="line break"):
        canonical_request("r\n1", "docs", deadline_ms=None, caller=None, auth=None,
                          fields_digest="ab")  # fmt: skip


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_signature_matches_openssl_hmac() -> None:
    headers, value = signed()
    payload = canonical_request("r-1", "docs", deadline_ms=DEADLINE, caller="alice", auth=None,
                                fields_digest=fields_digest_of(value))  # fmt: skip
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", f"hexkey:{SECRET.hex()}"],
        input=payload,
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert dict(headers)["modelyard-signature"].decode() == out.strip().rsplit(" ", 1)[-1]
    assert dict(headers)["modelyard-key-id"] == b"k-alice"


def test_a_signed_request_verifies_as_its_keys_principal() -> None:
    assert verify(*signed()) == Principal("alice", "signature")


def test_the_fields_digest_is_over_the_bytes_as_sent() -> None:
    # another encoder's choice (a float32, a str8 for a short string) is hashed as it came
    fields = b"\x81\xd9\x01x\xca\x3f\x80\x00\x00"  # {"x": 1.0 as float32}, key as str8
    value = b"\x82\xa1v\x01\xa6fields" + fields
    assert fields_digest_of(value) == hashlib.sha256(fields).hexdigest()
    assert (
        fields_digest_of(msgpack.packb({"v": 1, "id": "a"})) == hashlib.sha256(b"\x80").hexdigest()
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda h, v: ([x for x in h if x[0] != "modelyard-signature"], v), "not signed"),
        (lambda h, v: ([], v), "not signed"),
        (lambda h, v: ([("modelyard-key-id", b"k-nobody"), h[1]], v), "unknown caller key"),
        (lambda h, v: ([h[0], ("modelyard-signature", b"00" * 32)], v), "bad signature"),
        (lambda h, v: ([("modelyard-key-id", b"k-gw"), h[1]], v), "bad signature"),  # wrong key
        (lambda h, v: (h, v.replace(b"hello", b"HELLO")), "bad signature"),  # other fields
    ],
)
def test_unsigned_forged_or_altered_requests_are_unauthenticated(change, match) -> None:  # type: ignore[no-untyped-def]
    headers, value = change(*signed())
    with pytest.raises(UnauthenticatedError, match=match):
        verify(headers, value)


def test_a_signature_for_one_pipeline_fails_on_another() -> None:
    with pytest.raises(UnauthenticatedError, match="bad signature"):
        verify(*signed(), pipeline="other")


def test_a_key_signs_only_as_its_own_principal() -> None:
    with pytest.raises(PermissionDeniedError):
        signed(caller="admin")  # the signer refuses
    headers, value = signed()
    forged = msgpack.unpackb(value, raw=False, ext_hook=msgpack.ExtType)
    forged["caller"] = "admin"
    with pytest.raises((PermissionDeniedError, UnauthenticatedError)):
        verify(headers, msgpack.packb(forged, use_bin_type=True))
    claim = [*headers, ("modelyard-auth", b"token")]
    with pytest.raises(UnauthenticatedError):  # the claim is signed too
        verify(claim, value)


def test_a_key_not_allowed_the_pipeline_is_denied() -> None:
    headers, value = signed(pipeline="billing")
    with pytest.raises(PermissionDeniedError, match="may not call pipeline 'billing'"):
        verify(headers, value, pipeline="billing")


def test_a_gateway_key_signs_for_the_caller_it_authenticated() -> None:
    headers, value = signed(GATEWAY, caller="bob", on_behalf="token")
    assert verify(headers, value) == Principal("bob", "token")
    assert verify(*signed(GATEWAY, caller="router")) == Principal("router", "signature")
    unproven, value = signed(GATEWAY, caller="bob")  # names bob, says nothing of how
    with pytest.raises(UnauthenticatedError, match="without modelyard-auth"):
        verify(unproven, value)


def test_fields_given_twice_are_refused() -> None:
    headers, value = signed()
    doubled = bytes([value[0] + 1]) + value[1:] + b"\xa6fields\x80"  # one more key: "fields"
    with pytest.raises(UnauthenticatedError, match="'fields' twice"):
        verify(headers, doubled)


def test_an_oip_json_request_is_signed_over_its_whole_value() -> None:
    value = (
        b'{"id":"j1","parameters":{"caller":"alice"},'
        b'"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["hi"]}]}'
    )
    payload = b"v1\nj1\ndocs\n\nalice\n\n" + hashlib.sha256(value).hexdigest().encode()
    mac = hmac.new(SECRET, payload, hashlib.sha256).hexdigest().encode()
    headers = [("content-type", b"application/json"), ("modelyard-key-id", b"k-alice"),
               ("modelyard-signature", mac)]  # fmt: skip
    envelope = decode_oip_json(value, "j1")
    assert verify_request(headers, value, envelope, CALLERS, pipeline="docs") == Principal(
        "alice", "signature"
    )
    with pytest.raises(UnauthenticatedError):
        verify_request(headers, value.replace(b"hi", b"ho"), envelope, CALLERS, pipeline="docs")
