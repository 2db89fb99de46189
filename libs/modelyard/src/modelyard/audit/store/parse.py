"""An audit-topic record's exact bytes → the store's rows (the sink's write path and verify's
"does every column say what the record says").

One JSON parse (pydantic-core's, several times ``json.loads``'s speed) and a typed read of each
field: a few microseconds, where a full model
validation would cost the sink several times its insert. A value that is not a record of a known
kind, or lacks a field, or has one of the wrong type, raises ``DecodeError`` (the sink
dead-letters it). Fields it does not know are kept in ``raw`` and ignored, so a newer writer's
additions do not stop an older sink.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic_core import from_json

from modelyard.audit.store.rows import CheckpointRow, HopRow, PayloadRow, RequestRow
from modelyard.errors import DecodeError

__all__ = ["Parsed", "parse_record"]


@dataclass(slots=True)
class Parsed:
    """The rows one record gives: a request, or a hop and its payloads, or a checkpoint."""

    request: RequestRow | None = None
    hop: HopRow | None = None
    payloads: list[PayloadRow] = field(default_factory=list)
    checkpoint: CheckpointRow | None = None


def parse_record(raw: bytes) -> Parsed:
    """The rows of one audit record (``DecodeError`` when it is not a valid one)."""
    try:
        body = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise DecodeError(f"audit record is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("schema") != 1:
        raise DecodeError("audit record is not a schema 1 JSON object")
    kind = body.get("kind")
    try:
        if kind == "request":
            return Parsed(request=_request(body, raw))
        if kind == "hop":
            hop = _hop(body, raw)
            return Parsed(hop=hop, payloads=_payloads(body, hop))
        if kind == "checkpoint":
            return Parsed(checkpoint=_checkpoint(body, raw))
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"invalid {kind} audit record: {_why(exc)}") from None
    raise DecodeError(f"unknown audit record kind {kind!r}")


def _why(exc: Exception) -> str:
    return f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)


def _chain(body: dict[str, Any]) -> tuple[str | None, int | None, int | None, str | None]:
    chain = body.get("chain")
    if chain is None:
        return None, None, None, None
    if not isinstance(chain, dict):
        raise TypeError("chain must be an object")
    return _s(chain, "writer"), _i(chain, "partition"), _i(chain, "seq"), _s(chain, "prev")


def _request(b: dict[str, Any], raw: bytes) -> RequestRow:
    result = _payload(b.get("result"))
    served_by = b.get("served_by", {})
    skipped = b.get("skipped", [])
    if not isinstance(served_by, dict) or not all(isinstance(v, str) for v in served_by.values()):
        raise TypeError("served_by must map stages to model:version")
    if not isinstance(skipped, list) or not all(isinstance(v, str) for v in skipped):
        raise TypeError("skipped must be a list of stages")
    return RequestRow(
        0, _s(b, "request_id"), _s(b, "pipeline"), _principal(b), _os(b, "auth"),
        _t(b, "received_at"), _t(b, "finished_at"), served_by, tuple(skipped),
        _s(b, "outcome"), _os(b, "error"), _f(b, "latency_ms"), _os(b, "trace_id"),
        _s(b, "input_digest"), result[0], result[1], result[2], _i(b, "spec_version"),
        *_chain(b), hashlib.sha256(raw).hexdigest(), raw,
    )  # fmt: skip


def _hop(b: dict[str, Any], raw: bytes) -> HopRow:
    return HopRow(
        0, _s(b, "request_id"), _s(b, "pipeline"), _principal(b), _s(b, "stage"),
        _s(b, "model"), _s(b, "version"), _s(b, "role"), _oi(b, "attempt") or 0,
        bool(_ob(b, "shadow")), _t(b, "dispatched_at"), _t(b, "finished_at"),
        _f(b, "latency_ms"), _s(b, "outcome"), _os(b, "error"), _s(b, "input_digest"),
        _os(b, "output_digest"), _ob(b, "agrees"), _os(b, "span_id"), _os(b, "trace_id"),
        *_chain(b), hashlib.sha256(raw).hexdigest(), raw,
    )  # fmt: skip


def _payloads(b: dict[str, Any], hop: HopRow) -> list[PayloadRow]:
    rows = []
    for direction in ("input", "output"):
        value = b.get(direction)
        if value is None:
            continue
        digest, fields, size = _payload(value)
        rows.append(PayloadRow(
            0, hop.request_id, hop.stage, hop.attempt, hop.role, direction, digest or "",
            fields, size or 0, hop.chain_writer, hop.chain_partition, hop.chain_seq,
        ))  # fmt: skip
    return rows


def _payload(value: Any) -> tuple[str | None, bytes | None, int | None]:
    """(digest, fields as msgpack bytes or None, size) of a payload object; all None if absent."""
    if value is None:
        return None, None, None
    if not isinstance(value, dict):
        raise TypeError("a payload must be an object")
    text = _os(value, "fields")
    try:
        fields = None if text is None else base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("payload fields are not base64") from None
    return _s(value, "digest"), fields, _i(value, "bytes")


def _checkpoint(b: dict[str, Any], raw: bytes) -> CheckpointRow:
    return CheckpointRow(
        0, _s(b, "writer"), _i(b, "partition"), _i(b, "seq"), _s(b, "head"), _t(b, "at"),
        _s(b, "key_id"), _s(b, "signature"), raw,
    )  # fmt: skip


# typed reads -------------------------------------------------------------------------------
def _principal(b: dict[str, Any]) -> str | None:
    """The authenticated principal; older records name only the caller."""
    principal = _os(b, "principal")
    return principal if principal is not None else _os(b, "caller")


def _s(b: dict[str, Any], key: str) -> str:
    value = b[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _os(b: dict[str, Any], key: str) -> str | None:
    return None if b.get(key) is None else _s(b, key)


def _i(b: dict[str, Any], key: str) -> int:
    value = b[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} must be an integer")
    return value


def _oi(b: dict[str, Any], key: str) -> int | None:
    return None if b.get(key) is None else _i(b, key)


def _f(b: dict[str, Any], key: str) -> float:
    value = b[key]
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"{key} must be a number")
    return float(value)


def _ob(b: dict[str, Any], key: str) -> bool | None:
    value = b.get(key)
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{key} must be true or false")
    return value


def _t(b: dict[str, Any], key: str) -> datetime:
    value = datetime.fromisoformat(_s(b, key))
    if value.tzinfo is None:
        raise ValueError(f"{key} must name its time zone")
    return value
