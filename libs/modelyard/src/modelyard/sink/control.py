"""A control-topic record → its ``control_changes`` row: who changed what, why, signed how, and
the verdict routers reach on it.

The verdict is the fold every router runs (``modelyard.control.chain.Chain`` with a
``ControlVerifier`` over the keyring; ``modelyard history`` shows the same): accepted, rejected
with the reason (unsigned, unknown key, bad signature, not authorised, inconsistent), or
ignored (built on an older state: its writer lost a race). Without a keyring nobody here checks
signatures, so a record the fold applies is stored as ``unverified``, never as accepted. The
sink's verifier has no pipeline specs or model repository: deployability is the routers' check.

A verdict depends on every record before it, so the fold must start at the topic's first
offset. The sink reads the control topic in its consumer group, from its committed offset: on
the first control message after its partition is assigned (start, restart after a crash,
rebalance) and on a message at or before one already folded (redelivery), ``ControlFold``
folds the topic again from its first offset up to that message (``history``: one read of the
topic with ``read_records``), then goes on message by message. The control topic is small and
this happens once per assignment.

Every record is stored, the refused ones too (a forged or malformed record is evidence): one
that is not a valid control record is ``rejected`` with reason ``invalid``. The row's natural
key is the record's place on the topic (partition, offset).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from confluent_kafka import Message

from modelyard.audit.store import ControlChangeRow, Verdict
from modelyard.control.chain import Chain, Positioned

# the one decoding every reader applies (key and base header checks included); not re-exported
# by modelyard.control, and copying it here would let the sink's fold drift from the routers'
from modelyard.control.messages import decode_message
from modelyard.control.state import decode_record
from modelyard.control.verify import ControlVerifier
from modelyard.errors import DecodeError

__all__ = ["ControlFold", "History"]

History = Callable[[], Sequence[Positioned]]  # the control topic's decodable records, in order
_REASON_CHARS = 500


class ControlFold:
    """The sink's fold of the control topic (one partition), message by message."""

    def __init__(self, verifier: ControlVerifier, history: History) -> None:
        self._verifier, self._history = verifier, history
        self._chain: Chain | None = None  # None: must be folded again from the first offset
        self._last = -1  # the offset of the last record folded

    def reset(self) -> None:
        """The partition was assigned or revoked: fold again before the next message."""
        self._chain = None

    def row(self, msg: Message) -> ControlChangeRow:
        """The row of one consumed control message (never raises: a refused record is a row)."""
        value, offset = msg.value() or b"", msg.offset() or 0
        got = decode_message(msg)
        if got is None:
            return _row(value, msg, "rejected", f"invalid: {_invalid(value)}")
        chain = self._chain if self._chain is not None and offset > self._last else None
        if chain is None:
            chain = self._chain = self._refold(before=offset)
        marked, self._last = chain.offer(got), offset
        verdict, reason = self._verdict(marked)
        return _row(value, msg, verdict, reason)

    def _refold(self, *, before: int) -> Chain:
        chain = Chain(self._verifier, quiet=True)
        for p in self._history():
            if p.offset < before:
                chain.offer(Positioned(p.offset, p.record, p.base))
        return chain

    def _verdict(self, marked: Positioned) -> tuple[Verdict, str | None]:
        if marked.rejected is not None:
            return "rejected", f"{marked.rejected}: {marked.detail}"
        if not marked.applied:
            return "ignored", (
                f"lost_race: built on seq {marked.base}, an older state than routers hold"
            )
        if not self._verifier.secure:
            return "unverified", "no keyring: who signed it was not checked"
        return "accepted", None


def _invalid(value: bytes) -> str:
    try:
        decode_record(value)
    except DecodeError as exc:
        return exc.message
    return "its key or base header does not match the record"


def _row(value: bytes, msg: Message, verdict: Verdict, reason: str | None) -> ControlChangeRow:
    body = _object(value)
    pipeline = _text(body.get("key")) or (msg.key() or b"").decode("utf-8", "replace")
    signature = body.get("signature")
    return ControlChangeRow(
        id=0, pipeline=pipeline, seq=_int(body.get("seq")), who=_text(body.get("actor")),
        key_id=_text(body.get("key_id")), what=_change(body.get("change")),
        why=_text(body.get("reason")), at=_time(body.get("at")),
        signature=signature if isinstance(signature, str) else _text_of(signature),
        verdict=verdict, reason=None if reason is None else reason[:_REASON_CHARS],
        topic_partition=msg.partition() or 0, topic_offset=msg.offset() or 0, raw=value,
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
