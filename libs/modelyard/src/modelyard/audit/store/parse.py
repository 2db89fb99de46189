"""An audit-topic record's exact bytes → the store's rows (the sink's write path and verify's
"does every column say what the record says").

One pass in Rust: pydantic-core parses the JSON and checks every field's type against the
schema of its kind (``_RECORD``), a few microseconds for a hop with its payloads. Python then
only orders the values into the tuples the inserts bind (``record_values``: the column order
of ``tables.py``), with each time in the store's text form and each JSON column dumped, so the
sink builds no row object per record. ``parse_record`` gives the same values as frozen rows
(``rows.py``), as reading the store gives them back: what verify compares.

A value that is not a record of a known kind, or lacks a field, or has one of the wrong type,
raises ``DecodeError`` (the sink dead-letters it). Fields it does not know are kept in ``raw``
and ignored, so a newer writer's additions do not stop an older sink.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic_core import SchemaValidator, ValidationError
from pydantic_core import core_schema as cs

from modelyard.audit.store.rows import CheckpointRow, HopRow, PayloadRow, RequestRow
from modelyard.audit.store.tables import (
    CHECKPOINTS,
    HOPS,
    PAYLOADS,
    REQUESTS,
    Values,
    dump_json,
    store_time,
)
from modelyard.errors import DecodeError

__all__ = ["Parsed", "parse_record", "record_values"]


@dataclass(slots=True)
class Parsed:
    """The rows one record gives: a request, or a hop and its payloads, or a checkpoint."""

    request: RequestRow | None = None
    hop: HopRow | None = None
    payloads: list[PayloadRow] = field(default_factory=list)
    checkpoint: CheckpointRow | None = None


def record_values(raw: bytes) -> tuple[str, Values, list[Values]]:
    """(table, the record's row values, its payload rows' values); ``DecodeError`` when ``raw``
    is not a valid record. The sink's hot path: no row objects."""
    try:
        body = _RECORD.validate_json(raw)
    except ValidationError as exc:
        raise DecodeError(_why(exc)) from None
    kind = body["kind"]
    try:
        if kind == "hop":
            hop = _hop(body, raw)
            return HOPS.name, hop, _payloads(body, hop)
        if kind == "request":
            return REQUESTS.name, _request(body, raw), []
        return CHECKPOINTS.name, _checkpoint(body, raw), []
    except ValueError as exc:  # a time or base64 text that does not parse
        raise DecodeError(f"invalid {kind} audit record: {exc}") from None


def parse_record(raw: bytes) -> Parsed:
    """The rows of one audit record, as the store gives them back (``DecodeError`` when it is
    not a valid one)."""
    table, values, payloads = record_values(raw)
    if table == HOPS.name:
        return Parsed(hop=HOPS.load(values), payloads=[PAYLOADS.load(p) for p in payloads])
    if table == REQUESTS.name:
        return Parsed(request=REQUESTS.load(values))
    return Parsed(checkpoint=CHECKPOINTS.load(values))


# building the values -----------------------------------------------------------------------
def _request(b: dict[str, Any], raw: bytes) -> Values:
    result = b["result"]
    digest, fields, size = (None, None, None) if result is None else _payload(result)
    principal = b["principal"]
    return (
        b["request_id"], b["pipeline"], b["caller"] if principal is None else principal,
        b["auth"], _time(b["received_at"]), _time(b["finished_at"]), _served_by(b["served_by"]),
        dump_json(b["skipped"]) if b["skipped"] else "[]", b["outcome"], b["error"],
        b["latency_ms"], b["trace_id"], b["input_digest"], digest, fields, size,
        b["spec_version"], *_chain(b["chain"]), hashlib.sha256(raw).hexdigest(), raw,
    )  # fmt: skip


def _hop(b: dict[str, Any], raw: bytes) -> Values:
    principal = b["principal"]
    return (
        b["request_id"], b["pipeline"], b["caller"] if principal is None else principal,
        b["stage"], b["model"], b["version"], b["role"], b["attempt"] or 0, bool(b["shadow"]),
        _time(b["dispatched_at"]), _time(b["finished_at"]), b["latency_ms"], b["outcome"],
        b["error"], b["input_digest"], b["output_digest"], b["agrees"], b["span_id"],
        b["trace_id"], *_chain(b["chain"]), hashlib.sha256(raw).hexdigest(), raw,
    )  # fmt: skip


_HOP_CHAIN = slice(19, 22)  # chain writer, partition, seq


def _payloads(b: dict[str, Any], hop: Values) -> list[Values]:
    rows = []
    key = (hop[0], hop[3], hop[7], hop[6])
    chain = hop[_HOP_CHAIN]
    for direction in ("input", "output"):
        value = b[direction]
        if value is not None:
            rows.append((*key, direction, *_payload(value), *chain))
    return rows


def _payload(value: dict[str, Any]) -> tuple[str, bytes | None, int]:
    """(digest, fields as msgpack bytes or None, size) of a payload object."""
    text = value["fields"]
    try:
        fields = None if text is None else binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        raise ValueError("payload fields are not base64") from None
    return value["digest"], fields, value["bytes"]


def _checkpoint(b: dict[str, Any], raw: bytes) -> Values:
    return (b["writer"], b["partition"], b["seq"], b["head"], _time(b["at"]), b["key_id"],
            b["signature"], raw)  # fmt: skip


def _chain(chain: dict[str, Any] | None) -> tuple[str | None, int | None, int | None, str | None]:
    if chain is None:
        return None, None, None, None
    return chain["writer"], chain["partition"], chain["seq"], chain["prev"]


def _time(text: str) -> str:
    """A record's time (ISO 8601 with its zone) as the store keeps it (``store_time``)."""
    value = datetime.fromisoformat(text)  # validates; raises ValueError
    # what the writers write: 2026-12-06T20:00:00.123456Z, already UTC and fixed width
    if len(text) == 27 and text[26] == "Z" and text[10] == "T" and text[19] == ".":
        return f"{text[:10]} {text[11:26]}+00:00"
    if value.tzinfo is None:
        raise ValueError("times must name their time zone")
    return store_time(value)


_SERVED_BY: dict[tuple[tuple[str, str], ...], str] = {}  # few distinct maps: dumped once each
_SERVED_BY_MAX = 4096


def _served_by(value: dict[str, str]) -> str:
    key = tuple(value.items())
    text = _SERVED_BY.get(key)
    if text is None:
        if len(_SERVED_BY) >= _SERVED_BY_MAX:
            _SERVED_BY.clear()
        text = _SERVED_BY[key] = dump_json(value)
    return text


def _why(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    kind, loc = error["type"], error["loc"]
    if kind == "json_invalid":
        return f"audit record is not JSON: {error['msg']}"
    if kind in ("union_tag_invalid", "union_tag_not_found") or not loc:
        return f"unknown audit record kind: {error['msg']}"
    if loc[1:] == ("schema",):
        return "audit record is not a schema 1 JSON object"
    where = ".".join(str(part) for part in loc[1:])
    what = "missing field" if kind == "missing" else error["msg"]
    return f"invalid {loc[0]} audit record: {where}: {what}"


# the schema of each kind ---------------------------------------------------------------------
def _build_validator() -> SchemaValidator:
    text, integer = cs.str_schema(strict=True), cs.int_schema(strict=True)
    number = cs.float_schema(strict=True, allow_inf_nan=False)
    flag = cs.bool_schema(strict=True)

    def need(schema: cs.CoreSchema) -> cs.TypedDictField:
        return cs.typed_dict_field(schema)

    def may(schema: cs.CoreSchema, default: Any = None) -> cs.TypedDictField:
        nullable = schema if default is not None else cs.nullable_schema(schema)
        return cs.typed_dict_field(cs.with_default_schema(nullable, default=default),
                                   required=False)  # fmt: skip

    chain = cs.typed_dict_schema({"writer": need(text), "partition": need(integer),
                                  "seq": need(integer), "prev": need(text)})  # fmt: skip
    payload = cs.typed_dict_schema(
        {"digest": need(text), "fields": may(text), "bytes": need(integer)}
    )
    common = {
        "schema": need(cs.literal_schema([1])), "request_id": need(text),
        "pipeline": need(text), "principal": may(text), "caller": may(text),
        "trace_id": may(text), "outcome": need(text), "error": may(text),
        "latency_ms": need(number), "input_digest": need(text), "finished_at": need(text),
        "chain": may(chain),
    }  # fmt: skip
    hop = cs.typed_dict_schema({
        **common, "kind": need(cs.literal_schema(["hop"])), "stage": need(text),
        "model": need(text), "version": need(text), "role": need(text), "attempt": may(integer),
        "shadow": may(flag), "dispatched_at": need(text), "output_digest": may(text),
        "agrees": may(flag), "span_id": may(text), "input": may(payload), "output": may(payload),
    })  # fmt: skip
    request = cs.typed_dict_schema({
        **common, "kind": need(cs.literal_schema(["request"])), "auth": may(text),
        "received_at": need(text), "spec_version": need(integer), "result": may(payload),
        "served_by": may(cs.dict_schema(text, text), default={}),
        "skipped": may(cs.list_schema(text), default=[]),
    })  # fmt: skip
    checkpoint = cs.typed_dict_schema({
        "schema": need(cs.literal_schema([1])), "kind": need(cs.literal_schema(["checkpoint"])),
        "writer": need(text), "partition": need(integer), "seq": need(integer),
        "head": need(text), "at": need(text), "key_id": need(text), "signature": need(text),
    })  # fmt: skip
    kinds: dict[Any, Any] = {"hop": hop, "request": request, "checkpoint": checkpoint}
    return SchemaValidator(cs.tagged_union_schema(kinds, "kind"))


_RECORD = _build_validator()
