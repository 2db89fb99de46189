"""Decoding control records from the control topic's messages: the record, its key, its base.

Shared by :func:`modelyard.control.topic.read_state` (one pass) and
:class:`modelyard.control.follower.ControlFollower` (forever), which read the partition with
:mod:`modelyard.control.reader`.
"""

from __future__ import annotations

import structlog
from confluent_kafka import Message

from modelyard.control.chain import BASE_HEADER, Positioned
from modelyard.control.state import decode_record
from modelyard.errors import DecodeError

__all__ = ["Positioned", "decode_message"]

log = structlog.get_logger(__name__)


def decode_message(msg: Message) -> Positioned | None:
    """The record in ``msg``, or None (logged) when it is not a valid record for its key."""
    offset = msg.offset()
    value, key = msg.value(), msg.key()
    if value is None:
        log.warning("control record skipped", offset=offset, error="tombstone (no value)")
        return None
    try:
        record = decode_record(value)
    except DecodeError as exc:
        log.warning("control record skipped", offset=offset, error=exc.message)
        return None
    if key is None or key.decode(errors="replace") != record.key:
        # a record filed under another key would survive compaction differently: not trusted
        log.warning("control record skipped", offset=offset, error=f"key {key!r} != {record.key}")
        return None
    base = _base(msg.headers())
    if base is not None and base != record.seq - 1:
        log.warning("control record skipped", offset=offset, error=f"base {base} != seq - 1")
        return None
    return Positioned(offset, record, base)


def _base(headers: list[tuple[str, bytes]] | None) -> int | None:
    """The seq the record was built on (:mod:`modelyard.control.chain`); -1 when unreadable
    (never a record's seq - 1, so the record is skipped); None when the header is absent."""
    for name, value in headers or ():
        if name == BASE_HEADER:
            return int(value) if value and value.isdigit() else -1
    return None
