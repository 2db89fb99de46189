"""Turning a Kafka message into a request, and a request's outcome into records to produce."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from modelyard.errors import DecodeError, ModelyardError, PayloadTooLargeError
from modelyard.model import Outcome
from modelyard.wire.envelope import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_MSGPACK,
    MAX_NAME_LENGTH,
    Envelope,
    ErrorInfo,
    decode_envelope,
    encode_reply_envelope,
)
from modelyard.wire.headers import H, Headers, MessageMeta, encode_headers, parse_meta
from modelyard.wire.oip_json import decode_oip_json, encode_oip_json_error, encode_oip_json_response

__all__ = ["Incoming", "decode_message", "encode_reply"]

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # Kafka's legal topic names


@dataclass(slots=True)
class Incoming:
    """A consumed message, decoded as far as it would go.

    ``request_id`` (the envelope's, else the key), ``stage``, ``pipeline``, ``caller`` and
    ``is_json`` are read several times per message, so ``decode_message`` sets them once.
    """

    key: str | None
    value: bytes
    headers: Headers
    meta: MessageMeta
    envelope: Envelope | None = None
    error: ModelyardError | None = None
    replyable: bool = True  # False when reply-to is not a usable topic name
    is_json: bool = False
    request_id: str | None = None
    stage: str | None = None
    pipeline: str | None = None
    caller: str | None = None


def _is_json(content_type: str) -> bool:
    return len(content_type) <= _MAX_CONTENT_TYPE and _is_json_type(content_type)


@functools.lru_cache(maxsize=64)  # once per message, of a handful of values
def _is_json_type(content_type: str) -> bool:
    return content_type.split(";", maxsplit=1)[0].strip() == CONTENT_TYPE_JSON


def _is_topic_name(name: str) -> bool:
    return len(name) <= _MAX_TOPIC_NAME and _is_topic(name)  # the cache keeps no huge values


@functools.lru_cache(maxsize=1024)  # a stage sees few distinct reply-to topics
def _is_topic(name: str) -> bool:
    return name not in (".", "..") and _TOPIC_NAME.fullmatch(name) is not None  # Kafka's rule


_MAX_CONTENT_TYPE = 256
_MAX_TOPIC_NAME = 249


def decode_message(
    key: bytes | None, value: bytes | None, headers: Any, max_bytes: int
) -> Incoming:
    """Decode one message; a failure is recorded on the result, never raised."""
    hdrs = _valued(headers)
    # a key too long to be a request id names nobody to answer
    text_key = key.decode("utf-8", "replace") if key and len(key) <= MAX_NAME_LENGTH else None
    meta = parse_meta(hdrs)
    content_type = meta.content_type
    is_json = content_type is not None and _is_json(content_type)
    raw = value or b""
    envelope, error = _decode_value(raw, text_key, is_json, max_bytes, _extra_bytes(key, hdrs))
    replyable = True
    reply_to = meta.reply_to
    if reply_to is not None and not _is_topic_name(reply_to):
        replyable = False  # producing there would fail and stop the partition
        error = error or DecodeError(f"reply-to {reply_to!r} is not a topic name")
    if envelope is None:
        return Incoming(text_key, raw, hdrs, meta, None, error, replyable, is_json, text_key)
    # built once, positionally: this runs for every message
    return Incoming(
        text_key, raw, hdrs, meta, envelope, error, replyable, is_json,
        envelope.request_id, envelope.stage, envelope.pipeline, envelope.caller,
    )  # fmt: skip


def _decode_value(
    value: bytes, key: str | None, is_json: bool, max_bytes: int, extra_bytes: int
) -> tuple[Envelope | None, ModelyardError | None]:
    try:
        if len(value) + extra_bytes > max_bytes:
            raise PayloadTooLargeError(
                f"message is {len(value) + extra_bytes} bytes with its key and headers; "
                f"the limit is {max_bytes}"
            )
        if not value:
            raise DecodeError("empty message value")
        envelope = decode_oip_json(value, key) if is_json else decode_envelope(value)
    except ModelyardError as exc:
        return None, exc
    except Exception as exc:  # e.g. RecursionError on absurdly nested JSON: still poison
        return None, DecodeError(f"value cannot be decoded: {type(exc).__name__}: {exc}")
    return envelope, None


def _extra_bytes(key: bytes | None, headers: Headers) -> int:
    """What the key and headers add to a message's size (counted against its limit)."""
    extra = len(key) if key else 0
    for name, value in headers:
        extra += len(name) + len(value)
    return extra


def _valued(headers: Any) -> Headers:
    """The headers that have a value (Kafka allows null ones), copied only if one has none."""
    if not headers:
        return []
    for _, value in headers:
        if value is None:
            return [(k, v) for k, v in headers if v is not None]
    return headers if type(headers) is list else list(headers)


def encode_reply(
    incoming: Incoming, outcome: Outcome, model: str, version: str, stage: str | None
) -> bytes:
    """The reply value in the request's own format (envelope, or OIP JSON for JSON requests)."""
    request_id = incoming.request_id or ""
    error = outcome if isinstance(outcome, ModelyardError) else None
    if incoming.is_json:
        if error is not None:
            return encode_oip_json_error(request_id, error.code, error.message)
        base = incoming.envelope or Envelope(request_id)
        return encode_oip_json_response(base.reply({}, model, version), outcome)  # type: ignore[arg-type]
    base = incoming.envelope or Envelope(request_id)
    if error is not None:
        info = ErrorInfo(error.code, error.message, stage)
        return encode_reply_envelope(base, {}, model, version, info)
    return encode_reply_envelope(base, outcome, model, version)  # type: ignore[arg-type]


def reply_headers(incoming: Incoming) -> Headers:
    """Content type, shadow flag and attempt of the reply, as a new list (hooks append the
    trace context to it)."""
    meta = incoming.meta
    stage = meta.stage if meta.stage is not None and len(meta.stage) <= MAX_NAME_LENGTH else None
    return list(_reply_headers(incoming.is_json, meta.shadow, meta.attempt, stage))


@functools.lru_cache(maxsize=256)  # the same few header sets on nearly every reply
def _reply_headers(
    is_json: bool, shadow: bool, attempt: int, stage: str | None
) -> tuple[tuple[str, bytes], ...]:
    pairs = [
        (H.CONTENT_TYPE, CONTENT_TYPE_JSON if is_json else CONTENT_TYPE_MSGPACK),
        (H.SHADOW, "1" if shadow else None),
        (H.ATTEMPT, str(attempt)),
        (H.STAGE, stage),  # the router finds the hop by it, even for a reply it cannot decode
    ]
    return tuple(encode_headers(pairs))
