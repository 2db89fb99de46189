"""A catalogue of hostile Kafka messages for a text pipeline and its langid stage.

Each kind says, when it is built (never from what came back), the error code it must get at a
pipeline's ingress (the router) and at the stage's own input topic, since the two differ: the
router takes requests up to 16 MiB, langid only 64 KiB (key and headers included), so a 1 MB
``caller`` is ``decode`` at the router and ``too_large`` at langid. ``ok`` means answered without
an error; ``deadline`` is answered and never dead-lettered; every other code is dead-lettered.

Every message carries the header ``x-hostile-id``: dead letters keep the original headers, so
it finds each one's dead letter even when the message had no usable request id.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

__all__ = ["HUGE", "KINDS", "TAG", "Kind", "Sent", "messages", "valid_request"]

Headers = list[tuple[str, bytes]]
Target = Literal["ingress", "stage"]
Built = tuple[bytes | None, Headers]

TAG = "x-hostile-id"
HUGE = "record-101mb"  # the kind produced on its own, by a producer that allows it
HUGE_BYTES = 101_000_000  # above librdkafka's 100 MB receive default (receive.message.max.bytes)
PLAIN = "What a lovely morning, the coffee here is wonderful and the staff are kind."
TEXTS = {
    "en": "I love this wonderful sunny day, it makes me very happy.",
    "es": "La habitación era muy bonita y el personal fue muy amable con nosotros.",
}
_JSON = [("content-type", b"application/json")]


@dataclass(frozen=True)
class Kind:
    name: str
    ingress: str | None  # expected code at the pipeline's ingress; None: not sent there
    stage: str | None  # expected code at the stage's input topic; None: not sent there
    build: Callable[[str], Built]  # request id -> value and the kind's own headers
    refused_by: str | None = None  # at the ingress: routed, then refused by this stage
    long_key: bool = False  # keyed by a key too long to be a request id: nobody to answer
    copies: int | None = None  # None: the catalogue's default


@dataclass(frozen=True)
class Sent:
    """One message as produced, with what it must get."""

    rid: str  # x-hostile-id, and the key unless the kind says otherwise
    kind: str
    target: Target
    key: str
    value: bytes | None
    headers: Headers
    code: str
    reply_to: str | None  # a usable reply-to: the result (or reply) must come there too
    answered: bool  # a usable request id: a result on the results topic (ingress)
    dlq_stage: str | None  # dead-lettered by ("router" or a stage name); None: not at all


def messages(target: Target, reply_to: str, stage: str, copies: int) -> list[Sent]:
    """Every kind sent to ``target``, ``copies`` of each, interleaved kind after kind."""
    rounds = [list(_copies(kind, target, reply_to, stage, copies)) for kind in KINDS]
    width = max(len(r) for r in rounds)
    return [r[i] for i in range(width) for r in rounds if i < len(r)]


def valid_request(rid: str, lang: str, target: Target, reply_to: str) -> Sent:
    value = _envelope(rid, {"text": [TEXTS[lang]]})
    headers = [(TAG, rid.encode()), ("reply-to", reply_to.encode())]
    return Sent(rid, "valid", target, rid, value, headers, "ok", reply_to, True, None)


def _copies(kind: Kind, target: Target, reply_to: str, stage: str, copies: int) -> Iterator[Sent]:
    code = kind.ingress if target == "ingress" else kind.stage
    if code is None:
        return
    for i in range(kind.copies or copies):
        rid = f"h-{target[0]}-{kind.name}-{i}"
        value, own = kind.build(rid)
        key = ("k" * 300 + rid) if kind.long_key else rid
        names = {name for name, _ in own}
        usable = None if "reply-to" in names else reply_to
        headers = [(TAG, rid.encode()), *own]
        if usable is not None:
            headers.append(("reply-to", usable.encode()))
        by = (kind.refused_by or "router") if target == "ingress" else stage
        dlq = None if code in ("ok", "deadline") else by
        yield Sent(rid, kind.name, target, key, value, headers, code, usable,
                   not kind.long_key, dlq)  # fmt: skip


# --- builders ------------------------------------------------------------------------------


def _pack(body: Any) -> bytes:
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


def _envelope(rid: str, fields: Any = None, **extra: Any) -> bytes:
    body = {"v": 1, "id": rid, "fields": {"text": [PLAIN]} if fields is None else fields}
    return _pack({**body, **extra})


def _env(fields: Any = None, **extra: Any) -> Callable[[str], Built]:
    return lambda rid: (_envelope(rid, fields, **extra), [])


def _nd(datatype: str, shape: Any, data: Any) -> msgpack.ExtType:
    """An n-d array as the wire's extension type 1: msgpack ``[datatype, shape, data]``."""
    return msgpack.ExtType(1, _pack([datatype, shape, data]))


def _oip(**tensor: Any) -> Callable[[str], Built]:
    def build(rid: str) -> Built:
        one = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"], **tensor}
        return json.dumps({"id": rid, "inputs": [one]}).encode(), _JSON

    return build


def _headers(value: Callable[[str], bytes], **headers: bytes) -> Callable[[str], Built]:
    return lambda rid: (value(rid), [(k.replace("_", "-"), v) for k, v in headers.items()])


def _deep_msgpack(rid: str) -> Built:
    """A request whose text is a list nested 20,000 deep: deeper than msgpack unpacks."""
    marker = "@@deep@@"
    shallow = _envelope(rid, {"text": marker})
    return shallow.replace(_pack(marker), b"\x91" * 20_000 + _pack("x")), []


def _deep_json(rid: str) -> Built:
    return f'{{"id": "{rid}", "inputs": {"[" * 20_000}{"]" * 20_000}}}'.encode(), _JSON


def _bin_keys(rid: str) -> Built:
    return _pack({b"v": 1, b"id": rid.encode(), b"fields": {b"text": [PLAIN.encode()]}}), []


def _truncated(rid: str) -> Built:
    whole = _envelope(rid)
    return whole[: len(whole) // 2], []


def _spanish(text: str) -> Callable[[str], Built]:
    return _env({"text": [f"{TEXTS['es']} {text} {TEXTS['es']}"]})


def _null_headers(rid: str) -> Built:
    return _envelope(rid), [("content-type", None), ("attempt", None)]  # type: ignore[list-item]


def _header_name(rid: str) -> Built:
    return _envelope(rid), [("x" * 100_000, b"1")]


def _huge(rid: str) -> Built:
    return _envelope(rid, {"text": [b"\x00" * HUGE_BYTES]}), []


_TWO = b"\x00\x00\x00@"  # 2.0 as little-endian FP32

# fmt: off
KINDS: list[Kind] = [
    # fields the decoder reads but no model can take
    Kind("text-none", "validation", "validation", _env({"text": [None]})),
    Kind("text-map", "validation", "validation", _env({"text": [{"a": 1}]})),
    Kind("text-fp32", "validation", "validation", _env({"text": _nd("FP32", [1], _TWO)})),
    Kind("unknown-field", "validation", "validation", _env({"text": [PLAIN], "bogus": ["x"]})),
    Kind("missing-field", "validation", "validation", _env({})),
    Kind("other-pipeline", "validation", "ok", _env(pipeline="elsewhere")),
    # n-d array extensions that lie
    Kind("nd-bytes-none", "decode", "decode", _env({"text": _nd("BYTES", [1], [None])})),
    Kind("nd-negative-shape", "decode", "decode", _env({"text": _nd("BYTES", [-1], [b"x"])})),
    Kind("nd-huge-shape", "decode", "decode",
         _env({"text": _nd("FP32", [1 << 40, 1 << 20], _TWO * 4)})),
    Kind("nd-fp32-wrong-length", "decode", "decode", _env({"text": _nd("FP32", [3], _TWO * 2)})),
    Kind("unknown-ext", "decode", "decode", _env({"text": msgpack.ExtType(7, b"xx")})),
    # text a stage refuses after the router routed it (langid: 64 KiB, UTF-8 only)
    Kind("not-utf8", "validation", "validation",
         _env({"text": [b"caf\xe9 \xff\xfe \xc3("]}), refused_by="langid"),
    Kind("text-over-64k", "too_large", "too_large",
         _env({"text": ["spam " * 14_000]}), refused_by="langid"),
    Kind("nul-in-spanish", "validation", "ok", _spanish("uno\0dos"), refused_by="translate"),
    Kind("apertium-markup-spanish", "ok", "ok", _spanish("^hola/adiós$ [x] {y} <z> @w *v \\")),
    # envelope fields of the wrong size or type
    Kind("caller-1mb", "decode", "too_large", _env(caller="c" * 1_000_000)),
    Kind("id-300-chars", "decode", "decode", lambda rid: (_envelope("i" * 300 + rid), [])),
    Kind("id-300-chars-as-key", "decode", "decode",
         lambda rid: (_envelope("k" * 300 + rid), []), long_key=True),
    Kind("schema-v2", "decode", "decode", _env(v=2)),
    Kind("schema-text", "decode", "decode", _env(v="1")),
    Kind("deadline-text", "decode", "decode", _env(deadline="tomorrow")),
    Kind("deadline-float", "decode", "decode", _env(deadline=1.7e12)),
    Kind("pipeline-int", "decode", "decode", _env(pipeline=7)),
    Kind("caller-list", "decode", "decode", _env(caller=["alice"])),
    Kind("fields-list", "decode", "decode", _env([1, 2])),
    Kind("bin-field-names", "decode", "decode", _env({b"text": [PLAIN]})),
    Kind("bin-keys", "decode", "decode", _bin_keys),
    # values that are no envelope at all
    Kind("random-bytes", "decode", "decode", lambda rid: (random.Random(rid).randbytes(256), [])),
    Kind("truncated-msgpack", "decode", "decode", _truncated),
    Kind("deep-msgpack", "decode", "decode", _deep_msgpack),
    Kind("not-a-map", "decode", "decode", lambda rid: (_pack([1, 2, 3]), [])),
    Kind("empty-value", "decode", "decode", lambda rid: (b"", [])),
    Kind("null-value", "decode", "decode", lambda rid: (None, [])),
    # OIP v2 JSON values that lie
    Kind("json-negative-shape", "decode", "decode", _oip(shape=[-3])),
    Kind("json-bytes-number", "decode", "decode", _oip(data=[123])),
    Kind("json-data-map", "decode", "decode", _oip(data={})),
    Kind("json-not-object", "decode", "decode", lambda rid: (b'[["x"]]', _JSON)),
    Kind("json-id-number", "decode", "decode",
         lambda rid: (json.dumps({"id": 5, "inputs": []}).encode(), _JSON)),
    Kind("json-deep", "decode", "decode", _deep_json),
    # deadlines: a past one is answered, never dead-lettered; a far one is cut, and served
    Kind("deadline-past", "deadline", "deadline", _env(deadline=1)),
    Kind("deadline-zero", "deadline", "deadline", _env(deadline=0)),  # 1970: long past
    Kind("deadline-far", "ok", "ok", _env(deadline=2**64 - 1)),
    # headers
    Kind("reply-to-100kb", "decode", "too_large", _headers(_envelope, reply_to=b"r" * 100_000)),
    Kind("reply-to-not-a-topic", "decode", "decode",
         _headers(_envelope, reply_to=b"no such/topic!")),
    # legal characters, but Kafka takes no topic named "." or ".."
    Kind("reply-to-dot-dot", "decode", "decode", _headers(_envelope, reply_to=b"..")),
    # a partition reply-to does not have: unusable, so ignored like an unusable attempt
    Kind("reply-partition-999", "ok", "ok", _headers(_envelope, reply_partition=b"999")),
    Kind("attempt-5000-digits", "ok", "ok", _headers(_envelope, attempt=b"9" * 5000)),
    Kind("content-type-100kb", "ok", "too_large",
         _headers(_envelope, content_type=b"x" * 100_000)),
    Kind("header-name-100kb", "ok", "too_large", _header_name),
    Kind("null-header-values", "ok", "ok", _null_headers),
    Kind("unknown-content-type", "decode", "decode",
         _headers(lambda rid: f"hello {rid}".encode(), content_type=b"text/plain")),
    # one record larger than any topic takes and than librdkafka receives by default
    Kind(HUGE, "too_large", "too_large", _huge, copies=1),
]
# fmt: on
