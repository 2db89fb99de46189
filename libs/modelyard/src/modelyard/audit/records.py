"""Audit records: one per stage execution (hop) and one per request, as JSON on ``yard.audit``.

Keyed by request id, so one request's records stay in order on one partition. JSON rather than
msgpack: any Kafka client, a log shipper or a person with kcat can read them. A hop record says
who called which version of which model, when, on what input (its digest), and with what outcome;
``modelyard trace`` draws a request's waterfall from them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring as _esc  # a JSON string, as ensure_ascii=False
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from modelyard.errors import DecodeError
from modelyard.wire.envelope import pack_fields

__all__ = [
    "AuditRecord",
    "HopRecord",
    "RequestRecord",
    "decode_audit",
    "digest_fields",
    "digest_packed",
    "encode_audit",
    "encode_audit_values",
    "encode_hop_record",
    "encode_request_record",
    "utc",
]


_STRICT = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)
AuthMethod = Literal["token", "mtls", "signature", "trusted-header", "none"]


class ChainLink(BaseModel):
    """Where a record sits in its writer's hash chain (``modelyard audit verify`` walks them)."""

    model_config = _STRICT

    writer: str = Field(description="One id per router or auditor process run.")
    partition: int = Field(ge=0, description="The audit-topic partition it was produced to.")
    seq: int = Field(ge=0, description="0, 1, 2, ... per (writer, partition).")
    prev: str = Field(description="sha256 of the previous record's value bytes (64 zeros: none).")


class Payload(BaseModel):
    """Captured fields: always their digest and size; the fields themselves when the pipeline's
    capture policy keeps them (base64 of the msgpack map, redacted values replaced)."""

    model_config = _STRICT

    digest: str = Field(description="sha256 of the fields as the envelope packs them.")
    fields: str | None = Field(default=None, description="base64 msgpack map, or null.")
    bytes_: int = Field(alias="bytes", ge=0, description="Size of the packed fields.")


class _Record(BaseModel):
    # allow_inf_nan: a latency of NaN or Infinity (JSON readers accept both) is no time at all
    model_config = _STRICT

    schema_: Literal[1] = Field(default=1, alias="schema", description="Record format version.")
    chain: ChainLink | None = Field(default=None, description="Its link in the writer's chain.")
    request_id: str
    pipeline: str
    caller: str | None = Field(default=None, description="Principal that made the request.")
    trace_id: str | None = Field(default=None, description="W3C trace id, 32 hex digits.")
    outcome: str = Field(description='"ok" or an error code (model, deadline, validation...).')
    error: str | None = Field(default=None, description="Readable error, when not ok.")


class HopRecord(_Record):
    """One execution of one stage for one request (a shadow copy is a hop of its own)."""

    kind: Literal["hop"] = "hop"
    stage: str
    model: str
    version: str
    role: Literal["active", "canary", "shadow"]
    shadow: bool = False
    attempt: int = 0
    span_id: str | None = Field(default=None, description="The router's hop span, 16 hex.")
    dispatched_at: AwareDatetime
    finished_at: AwareDatetime
    latency_ms: float = Field(description="Dispatch to reply, as the router saw it.")
    input_digest: str = Field(description="sha256 of the stage input fields (msgpack).")
    output_digest: str | None = None
    agrees: bool | None = Field(
        default=None, description="Shadow hops: whether its outputs equal the primary's."
    )
    input: Payload | None = Field(default=None, description="Captured input (policy full).")
    output: Payload | None = Field(default=None, description="Captured output (policy full).")
    observed: dict[str, str | float] | None = Field(
        default=None, description="The monitored values (spec `monitor:`), for drift."
    )


class RequestRecord(_Record):
    """One request, from ingress to its final result."""

    kind: Literal["request"] = "request"
    spec_version: int
    received_at: AwareDatetime
    finished_at: AwareDatetime
    latency_ms: float
    served_by: dict[str, str] = Field(default_factory=dict, description='stage -> "model:ver".')
    skipped: tuple[str, ...] = ()
    input_digest: str
    principal: str | None = Field(default=None, description="The authenticated caller.")
    auth: AuthMethod = Field(default="none", description="How the principal was authenticated.")
    result: Payload | None = Field(default=None, description="The final result's fields.")


class CheckpointRecord(BaseModel):
    """A writer's signature over its chain's head: every record up to ``seq`` is as written."""

    model_config = _STRICT

    schema_: Literal[1] = Field(default=1, alias="schema")
    kind: Literal["checkpoint"] = "checkpoint"
    writer: str
    partition: int = Field(ge=0)
    seq: int = Field(ge=0, description="The last record it covers.")
    head: str = Field(description="sha256 of that record's value bytes.")
    at: AwareDatetime
    key_id: str = Field(description="The writer key (keyring) that signed it.")
    signature: str = Field(description="base64 Ed25519 over canonical_json of the five above.")


AuditRecord = Annotated[HopRecord | RequestRecord | CheckpointRecord, Field(discriminator="kind")]
AnyRecord = HopRecord | RequestRecord | CheckpointRecord

_RECORD: TypeAdapter[AnyRecord] = TypeAdapter(AuditRecord)


def encode_audit(record: AnyRecord) -> bytes:
    """The record's JSON value (UTF-8)."""
    return record.model_dump_json(by_alias=True).encode()


def encode_audit_values(kind: Literal["hop", "request"], values: Mapping[str, Any]) -> bytes:
    """The JSON of a record from trusted values, without building a model: the one encoder of
    every audit record (router and shadow auditor; several per request). ``values`` use the
    field names of :class:`HopRecord` or :class:`RequestRecord`, with times as unix seconds;
    ``decode_audit`` reads the result back as that model (a unit test holds the two to the same
    schema)."""
    body: dict[str, Any] = {"schema": 1, "kind": kind, **values}
    for key in _TIMES:
        ts = body.get(key)
        if ts is not None:
            body[key] = _iso(ts)
    return _JSON.encode(body).encode()


def encode_hop_record(
    *, request_id: str, pipeline: str, caller: str | None, trace_id: str | None, outcome: str,
    error: str | None, stage: str, model: str, version: str, role: str, shadow: bool,
    attempt: int, span_id: str | None, dispatched_at: float, finished_at: float,
    latency_ms: float, input_digest: str, output_digest: str | None,
    input: bytes | None = None, output: bytes | None = None,
    observed: Mapping[str, str | float] | None = None,
) -> bytes:  # fmt: skip
    """``encode_audit_values("hop", ...)`` of a router hop, from a template: the same JSON
    (the same keys in the same order) at about half the cost; two per request. ``input`` and
    ``output`` are captured payloads, as ``encode_payload`` gives them; ``observed`` the
    monitored values (``audit.observe``)."""
    return (_HOP % (
        _esc(request_id), _esc(pipeline), _text(caller), _text(trace_id), _esc(outcome),
        _text(error), _esc(stage), _esc(model), _esc(version), _esc(role),
        "true" if shadow else "false", attempt, _text(span_id), _iso(dispatched_at),
        _iso(finished_at), float(latency_ms), _esc(input_digest), _text(output_digest),
    )).encode() + (_captured(input, output) if input or output else b"") + (
        b',"observed":%s}' % _JSON.encode(observed).encode() if observed else b"}"
    )  # fmt: skip


_HOP = (
    '{"schema":1,"kind":"hop","request_id":%s,"pipeline":%s,"caller":%s,"trace_id":%s,'
    '"outcome":%s,"error":%s,"stage":%s,"model":%s,"version":%s,"role":%s,"shadow":%s,'
    '"attempt":%d,"span_id":%s,"dispatched_at":"%s","finished_at":"%s","latency_ms":%r,'
    '"input_digest":%s,"output_digest":%s'
)


def _captured(input_: bytes | None, output: bytes | None) -> bytes:
    return b',"input":%s,"output":%s' % (input_ or b"null", output or b"null")


def encode_request_record(
    *, request_id: str, pipeline: str, caller: str | None, trace_id: str | None, outcome: str,
    error: str | None, spec_version: int, received_at: float, finished_at: float,
    latency_ms: float, served_by: Mapping[str, str], skipped: list[str], input_digest: str,
    principal: str | None, auth: str, result: bytes | None,
) -> bytes:  # fmt: skip
    """``encode_audit_values("request", ...)`` of a routed request, from a template (one per
    request): the same JSON, the same keys in the same order. ``result`` is the final result's
    payload, as ``encode_payload`` gives it."""
    return (_REQUEST % (
        _esc(request_id), _esc(pipeline), _text(caller), _text(trace_id), _esc(outcome),
        _text(error), spec_version, _iso(received_at), _iso(finished_at), float(latency_ms),
        _JSON.encode(served_by), _JSON.encode(skipped), _esc(input_digest), _text(principal),
        _esc(auth),
    )).encode() + (result or b"null") + b"}"  # fmt: skip


_REQUEST = (
    '{"schema":1,"kind":"request","request_id":%s,"pipeline":%s,"caller":%s,"trace_id":%s,'
    '"outcome":%s,"error":%s,"spec_version":%d,"received_at":"%s","finished_at":"%s",'
    '"latency_ms":%r,"served_by":%s,"skipped":%s,"input_digest":%s,"principal":%s,"auth":%s,'
    '"result":'
)


def _text(value: str | None) -> str:
    return "null" if value is None else _esc(value)


_TIMES = ("dispatched_at", "finished_at", "received_at")
# built once, not per call; trusted values hold no cycles to look for
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
_SECONDS: dict[int, str] = {}  # whole seconds formatted: a record's times span a few


def _iso(ts: float) -> str:
    """``2026-12-06T20:00:00.123456Z``: what ``datetime.isoformat`` gives, without building a
    datetime; the text of a whole second is formatted once."""
    whole = int(ts // 1)
    micros = round((ts - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    text = _SECONDS.get(whole)
    if text is None:
        if len(_SECONDS) >= 256:
            _SECONDS.clear()  # a plain dict: safe to share between threads
        text = _SECONDS[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{text}.{micros:06d}Z"


def decode_audit(value: bytes) -> AnyRecord:
    """Parse an audit-topic value; DecodeError if it is not a valid record.

    Parsed by pydantic's JSON reader, which refuses lone surrogates (text that cannot be printed
    or stored again) and nesting past its limit, where ``json.loads`` would not.
    """
    try:
        return _RECORD.validate_json(value)
    except PydanticValidationError as exc:
        raise DecodeError(f"invalid audit record: {exc}") from None


def digest_fields(fields: object) -> str:
    """sha256 of fields as the envelope encodes them, so equal inputs give equal digests."""
    return digest_packed(pack_fields(fields))


def digest_packed(packed: bytes) -> str:
    """``digest_fields`` of fields already packed (``pack_fields``): the bytes sent on the
    wire are hashed as they are, never packed again for the purpose."""
    return hashlib.sha256(packed).hexdigest()


def utc(ts: float) -> datetime:
    """A unix timestamp (``time.time()``) as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)
