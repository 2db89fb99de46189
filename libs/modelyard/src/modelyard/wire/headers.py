"""Kafka headers modelyard reads and writes, and the per-message metadata parsed from them."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Headers",
    "MessageMeta",
    "dead_letter",
    "encode_headers",
    "header_value",
    "parse_meta",
]

Headers = list[tuple[str, bytes]]


class H:
    """Header names (lower case, as written)."""

    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
    CONTENT_TYPE = "content-type"
    REPLY_TO = "reply-to"
    REPLY_PARTITION = "reply-partition"  # the router pins replies to its own inbox partition
    SHADOW = "shadow"
    ATTEMPT = "attempt"
    STAGE = "stage"  # on dispatches, echoed on replies: names the hop even when the stage could
    # not decode the envelope it refused (too large, malformed)
    PROGRESS = (
        "progress"  # on ingress: "1" asks for every stage's reply on reply-to, not just the result
    )
    EVENT = "event"  # on what the router sends to reply-to: "stage" or "result"
    # on a dead letter sent back (`modelyard dlq replay`): "<dlq topic>/<partition>/<offset>"
    REPLAY_OF = "modelyard-replay-of"
    # on primary replies the router copies to a pipeline's shadow topic, for the shadow auditor
    SHADOW_ROLE = "shadow-role"  # "primary" (shadow replies carry `shadow: 1` instead)
    SHADOW_SENT_AT = "shadow-sent-at"  # unix seconds when the shadow copy was dispatched
    SHADOW_INPUT = "shadow-input-digest"  # sha256 of the stage input both got
    SHADOW_TRACE = "shadow-trace-id"  # the request's trace
    SHADOW_SPAN = "shadow-span-id"  # the router's span of the shadow send
    SHADOW_VERSION = "shadow-version"  # model:version the shadow copy went to
    # added to dead letters, beside the original headers
    DLQ_ERROR = "dlq-error"
    DLQ_ERROR_CODE = "dlq-error-code"
    DLQ_STAGE = "dlq-stage"
    DLQ_MODEL = "dlq-model"
    DLQ_SOURCE = "dlq-source"  # topic/partition/offset of the original message
    DLQ_TRUNCATED = "dlq-truncated"  # the original value's size, when only its start is kept
    DLQ_SHA256 = "dlq-sha256"  # sha256 of the whole original value, when truncated


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What the headers of one request say about it."""

    content_type: str | None = None
    reply_to: str | None = None
    reply_partition: int = -1  # -1: the producer's partitioner picks (by key)
    shadow: bool = False
    attempt: int = 0
    progress: bool = False  # pipeline requests: every stage's reply on reply-to as well
    stage: str | None = None  # the router's name for the hop (dispatches and their replies)


def header_value(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The last value of header ``name`` as text, or None (Kafka allows repeated keys)."""
    if not headers:
        return None
    value = None
    for key, raw in headers:
        if key.lower() == name and raw is not None:
            value = raw
    return _text(value)


def parse_meta(headers: Sequence[tuple[str, bytes | None]] | None) -> MessageMeta:
    # one pass over the headers (this runs per message), the parsing itself cached per value set
    values: list[bytes | None] | None = None
    for key, raw in headers or ():
        if raw is not None:
            slot = _SLOT_OF_KEY.get(key, _UNSEEN)
            if slot == _UNSEEN:
                slot = _learn_slot(key)
            if slot is not None:
                if values is None:
                    values = [None] * len(_META_ORDER)
                values[slot] = raw  # the last value wins, as in header_value
    if values is None:
        return _NO_META
    for value in values:  # a loop, not any(): a generator costs more than the check
        if value is not None and len(value) > _CACHED_VALUE_BYTES:
            return _meta.__wrapped__(tuple(values))  # a hostile size: parsed, never kept
    return _meta(tuple(values))


_META_ORDER = (
    H.CONTENT_TYPE, H.REPLY_TO, H.REPLY_PARTITION, H.SHADOW, H.ATTEMPT, H.PROGRESS, H.STAGE,
)  # fmt: skip
_SLOTS = {name: i for i, name in enumerate(_META_ORDER)}
_NO_META = MessageMeta()
# header key as sent -> its slot in _META_ORDER (None: not a meta header); saves lower-casing
# and hashing twice per header per message. Bounded: keys come from producers we do not control.
_SLOT_OF_KEY: dict[str, int | None] = {}
_UNSEEN = -1
_MAX_KEYS = 4096
_CACHED_KEY_CHARS = 64
_CACHED_VALUE_BYTES = 512  # meta values a cache may keep (topic names are at most 249)


def _learn_slot(key: str) -> int | None:
    slot = _SLOTS.get(key.lower())
    if len(_SLOT_OF_KEY) < _MAX_KEYS and len(key) <= _CACHED_KEY_CHARS:
        _SLOT_OF_KEY[key] = slot
    return slot


@functools.lru_cache(maxsize=1024)  # a stage sees few distinct reply-to topics and attempts
def _meta(values: tuple[bytes | None, ...]) -> MessageMeta:
    content_type, reply_to, partition, shadow, attempt, progress, stage = values
    return MessageMeta(
        content_type=_text(content_type),
        reply_to=_text(reply_to),
        reply_partition=_count(partition, -1),
        shadow=_flag(shadow),
        attempt=_count(attempt, 0),
        progress=_flag(progress),
        stage=_text(stage),
    )


def _count(raw: bytes | None, default: int) -> int:
    """A small decimal count (a partition, an attempt); ``default`` for anything else."""
    if raw is None or not 0 < len(raw) <= 9 or not raw.isdigit():  # bytes.isdigit: ASCII only
        return default
    return int(raw)


def _flag(raw: bytes | None) -> bool:
    return (_text(raw) or "").lower() in ("1", "true", "yes")


def _text(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if raw is not None else None


def encode_headers(pairs: Iterable[tuple[str, str | None]]) -> Headers:
    return [(k, v.encode()) for k, v in pairs if v is not None]


def dead_letter(
    value: bytes,
    original: Iterable[tuple[str, bytes]],
    message: str,
    code: str,
    *,
    source: str,
    max_bytes: int,
    stage: str | None = None,
    model: str | None = None,
) -> tuple[bytes, Headers]:
    """A dead letter's value and headers: the original bytes and headers, then why and where it
    failed (``dlq-*``).

    A record that would exceed ``max_bytes`` (the largest a topic takes) keeps the first bytes of
    the value that fit, drops original header values over 4 KiB, and says so in
    ``dlq-truncated`` (the original value's size) and ``dlq-sha256`` (of the whole value), so
    producing it cannot fail and stop the partition behind it.
    """
    why = encode_headers([
        (H.DLQ_ERROR, message[:_MAX_REASON]), (H.DLQ_ERROR_CODE, code), (H.DLQ_MODEL, model),
        (H.DLQ_STAGE, stage), (H.DLQ_SOURCE, source),
    ])  # fmt: skip
    headers = [*original, *why]
    if len(value) + _size(headers) <= max_bytes - _RECORD_OVERHEAD:
        return value, headers
    kept = [(k, v) for k, v in original if len(v) <= _KEPT_HEADER_BYTES]
    headers = [*kept, *why, *encode_headers([
        (H.DLQ_TRUNCATED, str(len(value))), (H.DLQ_SHA256, hashlib.sha256(value).hexdigest()),
    ])]  # fmt: skip
    room = max(0, max_bytes - _RECORD_OVERHEAD - _size(headers))
    return value[:room], headers


def _size(headers: Headers) -> int:
    return sum(len(k) + len(v) for k, v in headers)


_MAX_REASON = 4096  # characters of an error message a dead letter keeps
_KEPT_HEADER_BYTES = 4096
_RECORD_OVERHEAD = 4096  # key, batch and record framing
