"""Audit records: one per stage execution (hop) and one per request, as JSON on ``yard.audit``.

Keyed by request id, so one request's records stay in order on one partition. JSON rather than
msgpack: any Kafka client, a log shipper or a person with kcat can read them. A hop record says
who called which version of which model, when, on what input (its digest), and with what outcome;
``modelyard trace`` draws a request's waterfall from them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
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
    "encode_audit",
    "encode_audit_values",
    "utc",
]


class _Record(BaseModel):
    # allow_inf_nan: a latency of NaN or Infinity (JSON readers accept both) is no time at all
    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False
    )

    schema_: Literal[1] = Field(default=1, alias="schema", description="Record format version.")
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


AuditRecord = Annotated[HopRecord | RequestRecord, Field(discriminator="kind")]


_RECORD: TypeAdapter[HopRecord | RequestRecord] = TypeAdapter(AuditRecord)


def encode_audit(record: HopRecord | RequestRecord) -> bytes:
    """The record's JSON value (UTF-8)."""
    return record.model_dump_json(by_alias=True).encode()


def encode_audit_values(kind: Literal["hop", "request"], values: Mapping[str, Any]) -> bytes:
    """The JSON of a record from trusted values, without building a model (the router's hot
    path: several records per request). ``values`` use the field names of :class:`HopRecord` or
    :class:`RequestRecord`, with times as unix seconds; ``decode_audit`` reads the result back as
    that model (a unit test holds the two to the same schema)."""
    body: dict[str, Any] = {"schema": 1, "kind": kind}
    for key, value in values.items():
        body[key] = _iso(value) if key in _TIMES else value
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


_TIMES = frozenset(("dispatched_at", "finished_at", "received_at"))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def decode_audit(value: bytes) -> HopRecord | RequestRecord:
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
    return hashlib.sha256(pack_fields(fields)).hexdigest()


def utc(ts: float) -> datetime:
    """A unix timestamp (``time.time()``) as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)
