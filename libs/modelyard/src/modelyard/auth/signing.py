"""Signed Kafka requests: HMAC-SHA256 with the caller's key over the request's identity.

The signed bytes (docs/wire-format.md, "Signing a request") are UTF-8 text, seven lines joined
by ``\\n`` with no trailing newline::

    v1
    <request id>
    <pipeline>
    <deadline in epoch ms, or empty>
    <caller named in the envelope, or empty>
    <value of the modelyard-auth header, or empty>
    <sha256 hex of the envelope's "fields" value, its msgpack bytes exactly as sent>

A request in OIP v2 JSON (``content-type: application/json``) has no envelope: its last line is
the sha256 of the whole value, its caller ``parameters.caller``, and its deadline empty.

Headers: ``modelyard-key-id`` (which key), ``modelyard-signature`` (lower-case hex HMAC), and,
from a gateway key only (``may_act_for``), ``modelyard-auth``: how that gateway authenticated
the caller it names. The fields are hashed as they are on the wire, not re-encoded, so a signer
in any language that packs its fields once gets the digest the router computes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import msgpack

from modelyard.auth.callers import CallerKey, CallerKeys
from modelyard.auth.principal import ANONYMOUS, AUTH_METHODS, AuthMethod, Principal
from modelyard.errors import PermissionDeniedError, UnauthenticatedError, ValidationError
from modelyard.wire import CONTENT_TYPE_JSON, Envelope
from modelyard.wire.headers import H, Headers, header_value

__all__ = [
    "AUTH_HEADER",
    "KEY_ID_HEADER",
    "SIGNATURE_HEADER",
    "canonical_request",
    "fields_digest_of",
    "sign_request",
    "verify_request",
]

KEY_ID_HEADER = "modelyard-key-id"
SIGNATURE_HEADER = "modelyard-signature"
AUTH_HEADER = "modelyard-auth"
_VERSION = "v1"
_EMPTY_FIELDS_DIGEST = hashlib.sha256(b"\x80").hexdigest()  # an envelope without "fields"


def canonical_request(
    request_id: str,
    pipeline: str,
    *,
    deadline_ms: int | None,
    caller: str | None,
    auth: str | None,
    fields_digest: str,
) -> bytes:
    """The bytes a request signature covers; ValueError if a part holds a line break."""
    parts = [_VERSION, request_id, pipeline, "" if deadline_ms is None else str(deadline_ms),
             caller or "", auth or "", fields_digest]  # fmt: skip
    if any("\n" in part or "\r" in part for part in parts):
        raise ValueError("a signed part of the request holds a line break")
    return "\n".join(parts).encode()


def sign_request(
    key: CallerKey,
    request_id: str,
    pipeline: str,
    deadline_ms: int | None,
    fields_digest: str,
    *,
    caller: str | None = None,
    on_behalf: AuthMethod | None = None,
) -> Headers:
    """The headers that sign one request with ``key``.

    ``caller`` is the caller the envelope names (default: the key's principal); only a
    ``may_act_for`` key may name another, and says with ``on_behalf`` how it authenticated them.
    """
    caller = key.principal if caller is None else caller
    if (caller != key.principal or on_behalf is not None) and not key.may_act_for:
        raise PermissionDeniedError(
            f"key {key.key_id} of {key.principal!r} may sign only as {key.principal!r}"
        )
    try:
        payload = canonical_request(
            request_id, pipeline, deadline_ms=deadline_ms, caller=caller, auth=on_behalf,
            fields_digest=fields_digest,
        )  # fmt: skip
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    headers = [(KEY_ID_HEADER, key.key_id.encode()), (SIGNATURE_HEADER, _mac(key, payload))]
    if on_behalf is not None:
        headers.append((AUTH_HEADER, on_behalf.encode()))
    return headers


def verify_request(
    headers: Sequence[tuple[str, bytes | None]] | None,
    value: bytes,
    envelope: Envelope,
    callers: CallerKeys,
    *,
    pipeline: str,
) -> Principal:
    """The principal of a signed request to ``pipeline`` (the router's own, not the envelope's:
    a request signed for one pipeline is refused by every other). ``value`` is the message value
    as received and ``envelope`` what the router decoded from it (msgpack or OIP JSON).

    Raises UnauthenticatedError (unsigned, unknown key, bad signature) or PermissionDeniedError
    (a key naming a caller it may not act for, or not allowed ``pipeline``).
    """
    key_id, signature = (
        header_value(headers, KEY_ID_HEADER),
        header_value(headers, SIGNATURE_HEADER),
    )
    if not key_id or not signature:
        raise UnauthenticatedError(
            f"the request is not signed (no {KEY_ID_HEADER} and {SIGNATURE_HEADER} headers)"
        )
    key = callers.get(key_id)
    if key is None:
        raise UnauthenticatedError(f"unknown caller key {key_id!r}")
    claim = header_value(headers, AUTH_HEADER)
    content_type = header_value(headers, H.CONTENT_TYPE) or ""
    if content_type.startswith(CONTENT_TYPE_JSON):
        digest = hashlib.sha256(value).hexdigest()  # OIP JSON: no envelope, the value is signed
    else:
        digest = fields_digest_of(value)
    _check_signature(key, signature, _signed_bytes(envelope, pipeline, claim, digest))
    principal = _principal(key, envelope.caller, claim)
    if not key.grant.allows_pipeline(pipeline):
        raise PermissionDeniedError(f"key {key.key_id} may not call pipeline {pipeline!r}")
    return principal


def fields_digest_of(value: bytes) -> str:
    """sha256 hex of the msgpack bytes of an envelope's ``fields`` value, exactly as sent.

    Raises UnauthenticatedError for a value that is no map or repeats ``fields`` (the decoder
    keeps the last copy, so a signature over the first would cover other fields).
    """
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(value), 1))
    unpacker.feed(value)
    found: memoryview | None = None
    try:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            start = unpacker.tell()
            unpacker.skip()
            if key == "fields":
                if found is not None:
                    raise UnauthenticatedError("the envelope holds 'fields' twice")
                found = memoryview(value)[start : unpacker.tell()]
    except UnauthenticatedError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise UnauthenticatedError(
            f"cannot read the envelope to check its signature: {exc}"
        ) from None
    return _EMPTY_FIELDS_DIGEST if found is None else hashlib.sha256(found).hexdigest()


def _signed_bytes(envelope: Envelope, pipeline: str, claim: str | None, digest: str) -> bytes:
    try:
        return canonical_request(
            envelope.request_id, pipeline, deadline_ms=envelope.deadline_ms,
            caller=envelope.caller, auth=claim, fields_digest=digest,
        )  # fmt: skip
    except ValueError as exc:
        raise UnauthenticatedError(f"cannot check the signature: {exc}") from None


def _check_signature(key: CallerKey, signature: str, payload: bytes) -> None:
    given = signature.strip().lower().encode("ascii", "replace")
    if not hmac.compare_digest(_mac(key, payload), given):
        raise UnauthenticatedError(f"bad signature for caller key {key.key_id}")


def _principal(key: CallerKey, caller: str | None, claim: str | None) -> Principal:
    if not key.may_act_for:
        if caller not in (None, key.principal) or claim is not None:
            raise PermissionDeniedError(
                f"key {key.key_id} of {key.principal!r} may not sign for caller {caller!r}"
            )
        return Principal(key.principal, "signature")
    if claim is None:  # a gateway's request of its own
        if caller not in (None, key.principal):
            raise UnauthenticatedError(
                f"key {key.key_id} names caller {caller!r} without {AUTH_HEADER}: how was it "
                "authenticated?"
            )
        return Principal(key.principal, "signature")
    if claim not in AUTH_METHODS:
        raise UnauthenticatedError(f"{AUTH_HEADER} names no authentication method: {claim!r}")
    method: AuthMethod = claim  # narrowed by the membership test above
    return Principal(caller or ANONYMOUS, method)


def _mac(key: CallerKey, payload: bytes) -> bytes:
    return hmac.new(key.secret, payload, hashlib.sha256).hexdigest().encode()
