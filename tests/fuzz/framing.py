"""Kafka messages as bytes, so atheris can mutate them and the corpus can keep them."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Message", "frame_message", "split_message"]


class Message(NamedTuple):
    """A Kafka message as a client hands it over (a null key, value or header value is None)."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, Any]]


def frame_message(message: Message) -> bytes:
    """``message`` as corpus bytes (:func:`split_message` reads it back).

    A flags byte (bit 0: a key; bit 1: a null value; bits 2-5: the header count, up to 15),
    then the key, each header's name and value (-1 length: null) and the value, each after its
    4-byte little-endian length. A NUL-free name is not required: lengths delimit everything.
    """
    headers = message.headers[:15]
    flags = (1 if message.key is not None else 0) | (2 if message.value is None else 0)
    out = bytearray([flags | len(headers) << 2])
    if message.key is not None:
        out += _chunk(message.key)
    for name, value in headers:
        out += _chunk(name.encode("utf-8", "surrogatepass"))
        out += _chunk(value) if value is not None else (2**32 - 1).to_bytes(4, "little")
    out += message.value or b""
    return bytes(out)


def _chunk(data: bytes) -> bytes:
    return len(data).to_bytes(4, "little") + data


def split_message(data: bytes) -> Message:
    """The message framed in ``data``; any bytes frame some message (a short read is empty)."""
    if not data:
        return Message(None, b"", [])
    flags, view = data[0], memoryview(data)[1:]
    key = None
    if flags & 1:
        key, view = _take(view)
    headers: list[tuple[str, Any]] = []
    for _ in range((flags >> 2) & 15):
        name, view = _take(view)
        value, view = _take(view)
        headers.append(((name or b"").decode("utf-8", "replace"), value))
    return Message(key, None if flags & 2 else bytes(view), headers)


def _take(view: memoryview) -> tuple[Any, memoryview]:
    size = int.from_bytes(view[:4], "little")
    if size == 2**32 - 1:
        return None, view[4:]
    return bytes(view[4 : 4 + size]), view[4 + size :]
