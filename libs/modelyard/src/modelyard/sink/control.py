"""A control-topic record → its ``control_changes`` row: who changed what, why, signed how, and
whether it is a record routers can apply.

Every record is stored, the refused ones too (a forged or malformed record is evidence): one
that is not a valid control record is kept with ``accepted`` false and the reason. The row's
natural key is the record's place on the topic (partition, offset).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from modelyard.audit.store import ControlChangeRow
from modelyard.control.state import decode_record
from modelyard.errors import DecodeError

__all__ = ["control_change_row"]


def control_change_row(
    value: bytes, key: bytes | None, partition: int, offset: int
) -> ControlChangeRow:
    """The row of one control record (never raises: an invalid record is a refused row)."""
    body = _object(value)
    pipeline = _text(body.get("key")) or (key or b"").decode("utf-8", "replace")
    try:
        decode_record(value)
        accepted, reason = True, None
    except DecodeError as exc:
        accepted, reason = False, exc.message[:500]
    signature = body.get("signature")
    return ControlChangeRow(
        id=0, pipeline=pipeline, seq=_int(body.get("seq")), who=_text(body.get("actor")),
        key_id=_text(body.get("key_id")), what=_change(body.get("change")),
        why=_text(body.get("reason")), at=_time(body.get("at")),
        signature=signature if isinstance(signature, str) else _text_of(signature),
        accepted=accepted, reason=reason, topic_partition=partition, topic_offset=offset,
        raw=value,
    )  # fmt: skip


def _object(value: bytes) -> dict[str, Any]:
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _text_of(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _change(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
