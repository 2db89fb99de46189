"""The msgpack envelope that every modelyard Kafka message carries as its value.

A map with short, stable keys (see docs/wire-format.md)::

    {"v": 1, "id": "req-1", "pipeline": "docs", "stage": "ocr", "caller": "alice",
     "deadline": 1767225600000, "fields": {"image": b"...", "scores": <ndarray ext>},
     "model": "ocr", "version": "2", "error": None}

A pipeline's final result also carries ``served_by``: stage -> ``"<model>:<version>"``.

n-d arrays travel as msgpack extension type 1 whose payload is itself msgpack:
``[datatype, shape, data]`` with an OIP datatype name, a list of ints, and the row-major
little-endian bytes (for BYTES tensors, a list of byte strings).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from modelyard.errors import DecodeError
from modelyard.tensors import DATATYPES, bytes_items, datatype_of, numpy_dtype

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_MSGPACK",
    "MAX_CALLER_LENGTH",
    "MAX_NAME_LENGTH",
    "NDARRAY_EXT",
    "SCHEMA_VERSION",
    "Envelope",
    "ErrorInfo",
    "decode_envelope",
    "encode_envelope",
    "encode_envelope_fields",
    "encode_reply_envelope",
    "pack_fields",
    "unpack_arrays",
    "unpack_fields",
]

SCHEMA_VERSION = 1
NDARRAY_EXT = 1
MAX_NAME_LENGTH = 255  # request ids and names (pipeline, stage, model, version), in characters
MAX_CALLER_LENGTH = 1024  # principals: user names, token names, certificate subjects
CONTENT_TYPE_MSGPACK = "application/vnd.modelyard.envelope+msgpack"
CONTENT_TYPE_JSON = "application/json"  # an OIP v2 JSON inference request or response


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a request failed, as the caller sees it."""

    code: str  # the ModelyardError.code: decode, validation, too_large, model, deadline...
    message: str
    stage: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "stage": self.stage}


@dataclass(slots=True)  # not frozen: a frozen __init__ cost 1 us more per decoded message
class Envelope:
    """One request to, or reply from, a stage; treated as immutable (``reply`` makes a new one).

    Replies carry ``model`` and ``version``, and ``error`` when the request failed.
    """

    request_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    pipeline: str | None = None
    stage: str | None = None
    caller: str | None = None
    deadline_ms: int | None = None  # unix epoch milliseconds
    model: str | None = None
    version: str | None = None
    error: ErrorInfo | None = None
    schema: int = SCHEMA_VERSION
    served_by: Mapping[str, str] | None = None  # final results: stage -> "model:version"

    def reply(
        self, fields: Mapping[str, Any], model: str, version: str, error: ErrorInfo | None = None
    ) -> Envelope:
        """The reply to this request: same id, pipeline, stage and caller."""
        # built directly: dataclasses.replace is several times slower, and this runs per message
        return Envelope(
            self.request_id,
            fields,
            self.pipeline,
            self.stage,
            self.caller,
            self.deadline_ms,
            model,
            version,
            error,
            self.schema,
        )


def encode_envelope(envelope: Envelope) -> bytes:
    return _pack_envelope(
        envelope, envelope.fields, envelope.model, envelope.version, envelope.error
    )


def encode_reply_envelope(
    request: Envelope,
    fields: Mapping[str, Any],
    model: str,
    version: str,
    error: ErrorInfo | None = None,
) -> bytes:
    """``encode_envelope(request.reply(...))`` without building the reply (runs per message)."""
    return _pack_envelope(request, fields, model, version, error, with_served_by=False)


def _pack_envelope(
    head: Envelope,
    fields: Mapping[str, Any],
    model: str | None,
    version: str | None,
    error: ErrorInfo | None,
    *,
    with_served_by: bool = True,
) -> bytes:
    """The envelope with ``head``'s identity (id, pipeline, stage, caller, deadline, schema)."""
    body: dict[str, Any] = {"v": head.schema, "id": head.request_id, "fields": fields}
    # spelled out, not a loop over (key, value) pairs: this runs for every reply
    if head.pipeline is not None:
        body["pipeline"] = head.pipeline
    if head.stage is not None:
        body["stage"] = head.stage
    if head.caller is not None:
        body["caller"] = head.caller
    if head.deadline_ms is not None:
        body["deadline"] = head.deadline_ms
    if model is not None:
        body["model"] = model
    if version is not None:
        body["version"] = version
    if error is not None:
        body["error"] = error.to_wire()
    if with_served_by and head.served_by is not None:
        body["served_by"] = dict(head.served_by)
    return pack_fields(body)


def encode_envelope_fields(head: Envelope, packed_fields: bytes) -> bytes:
    """``encode_envelope`` of ``head`` with its fields already packed (``pack_fields``), so a
    sender that also hashes them packs them once. Byte for byte what ``encode_envelope`` gives;
    ``head.fields`` is not read."""
    empty = _pack_envelope(head, {}, head.model, head.version, head.error)
    # "fields" follows "v" and "id"; neither can hold these bytes ("s" then 0x80 is no UTF-8)
    at = empty.index(_EMPTY_FIELDS)
    return b"".join((empty[: at + 7], packed_fields, empty[at + 8 :]))


_EMPTY_FIELDS = b"\xa6fields\x80"  # the key "fields", then an empty map


def pack_fields(fields: object) -> bytes:
    """Fields (or any value) as the envelope encodes them; digests are taken over this."""
    return _PACKERS.outer.pack(fields)  # type: ignore[no-any-return]


def unpack_fields(packed: bytes) -> dict[str, Any]:
    """Fields packed by ``pack_fields`` (e.g. a payload an audit record captured), arrays
    decoded; DecodeError when they are not a map of fields."""
    try:
        fields = msgpack.unpackb(packed, ext_hook=_unpack_ext, raw=False, strict_map_key=True)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise DecodeError(f"not msgpack fields: {exc}") from exc
    if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
        raise DecodeError(f"fields must be a map by name, got {type(fields).__name__}")
    return fields


def decode_envelope(data: bytes, *, arrays: bool = True) -> Envelope:
    """Parse an envelope; anything malformed raises DecodeError with a readable reason.

    ``arrays`` False leaves each n-d array as the ``msgpack.ExtType`` it came in: packed again,
    it gives the same bytes, so a router passes a stage's outputs on without decoding them;
    ``unpack_arrays`` decodes them where their values are read."""
    try:
        ext_hook = _unpack_ext if arrays else _keep_ext
        body = msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=True)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise DecodeError(f"value is not a msgpack envelope: {exc}") from exc
    if not isinstance(body, dict):
        raise DecodeError(f"envelope must be a map, got {type(body).__name__}")
    return _envelope_from_map(body)


def _envelope_from_map(body: dict[str, Any]) -> Envelope:
    schema = body.get("v")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise DecodeError(
            f"unsupported envelope schema version {_shown(schema)} (expected {SCHEMA_VERSION})"
        )
    request_id = body.get("id")
    if not isinstance(request_id, str) or not request_id:
        raise DecodeError("envelope has no request id ('id' must be a non-empty string)")
    if len(request_id) > MAX_NAME_LENGTH:
        raise DecodeError(
            f"request id is {len(request_id)} characters; the limit is {MAX_NAME_LENGTH}"
        )
    fields = body.get("fields", {})
    if not isinstance(fields, dict):
        raise DecodeError("'fields' must be a map of name to value")
    for name in fields:
        if not isinstance(name, str):  # msgpack map keys may also be bin
            raise DecodeError(f"field names must be strings, got {type(name).__name__}")
    if body.keys() <= _REQUIRED:  # a plain request, the common case: nothing optional to check
        return Envelope(request_id, fields, schema=schema)
    return _full_envelope(body, request_id, fields, schema)


_REQUIRED = frozenset(("v", "id", "fields"))


def _full_envelope(body: dict[str, Any], request_id: str, fields: Any, schema: int) -> Envelope:
    served_by = body.get("served_by")
    if served_by is not None and not (
        isinstance(served_by, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in served_by.items())
    ):
        raise DecodeError("'served_by' must be a map of stage to 'model:version'")
    deadline = body.get("deadline")
    if deadline is not None and type(deadline) is not int:  # bool is an int to isinstance
        raise DecodeError(f"envelope field 'deadline' must be int, got {type(deadline).__name__}")
    return Envelope(
        request_id=request_id,
        fields=fields,
        pipeline=_name(body, "pipeline"),
        stage=_name(body, "stage"),
        caller=_name(body, "caller", MAX_CALLER_LENGTH),
        deadline_ms=deadline,
        model=_name(body, "model"),
        version=_name(body, "version"),
        error=_error(body.get("error")),
        schema=schema,
        served_by=served_by,
    )


def _name(body: dict[str, Any], key: str, limit: int = MAX_NAME_LENGTH) -> str | None:
    """An optional text field of the envelope, no longer than ``limit`` characters."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"envelope field {key!r} must be str, got {type(value).__name__}")
    if len(value) > limit:
        raise DecodeError(
            f"envelope field {key!r} is {len(value)} characters; the limit is {limit}"
        )
    return value


def _error(error: Any) -> ErrorInfo | None:
    if error is None:
        return None
    if not (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
        and isinstance(error.get("stage"), str | None)
    ):
        raise DecodeError("'error' must be a map with str 'code' and 'message' (and 'stage')")
    return ErrorInfo(error["code"], error["message"], error.get("stage"))


def _shown(value: Any) -> str:
    """A value from the wire for an error message, cut short: it may be huge."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


def _pack_ndarray(obj: Any) -> msgpack.ExtType:
    if type(obj) is not np.ndarray:  # the common case skips both isinstance checks
        if isinstance(obj, np.generic):
            obj = np.asarray(obj)
        if not isinstance(obj, np.ndarray):
            raise TypeError(f"cannot put {type(obj).__name__} in an envelope")
    datatype = _WIRE_DTYPES.get(obj.dtype)
    if datatype is not None:  # already the wire's little-endian dtype: its C-order bytes as is
        data: Any = obj.tobytes()
    else:
        datatype = datatype_of(obj)
        if datatype == "BYTES":
            data = bytes_items(obj.reshape(-1).tolist())
        else:
            data = np.ascontiguousarray(obj, dtype=numpy_dtype(datatype)).tobytes()
    payload = _PACKERS.inner.pack([datatype, list(obj.shape), data])
    # ExtType is a named tuple whose __new__ only checks types that are right by construction
    # here; building the tuple directly saves a Python call per array
    return tuple.__new__(msgpack.ExtType, (NDARRAY_EXT, payload))


# numeric dtypes whose bytes go on the wire unconverted (== is by value: '<f4' is float32 here)
_WIRE_DTYPES = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}


class _Packers(threading.local):
    """Reused per thread: ``msgpack.packb`` builds (and allocates a buffer for) a new Packer on
    every call, a large part of encoding a small reply; a Packer is not thread-safe."""

    def __init__(self) -> None:
        self.outer = msgpack.Packer(default=_pack_ndarray, use_bin_type=True)
        self.inner = msgpack.Packer(use_bin_type=True)  # ndarray payloads, packed mid-outer


_PACKERS = _Packers()


def _unpack_ext(code: int, payload: bytes) -> np.ndarray[Any, Any]:
    datatype, dims, data = _array_parts(code, payload)
    if datatype == "BYTES":
        array = np.empty(len(data), dtype=object)
        array[:] = data
        return array.reshape(dims)
    # one call instead of frombuffer().reshape(): a third of the cost, per array per message
    return np.ndarray(dims, numpy_dtype(datatype), data)


def _keep_ext(code: int, payload: bytes) -> msgpack.ExtType:
    """The array left packed, checked as ``_unpack_ext`` checks it: what is passed on decodes."""
    _array_parts(code, payload)
    return tuple.__new__(msgpack.ExtType, (code, payload))  # see _pack_ndarray


def _array_parts(code: int, payload: bytes) -> tuple[str, tuple[int, ...], Any]:
    """An n-d array extension's datatype, shape and data, each checked."""
    if code != NDARRAY_EXT:
        raise DecodeError(f"unknown msgpack extension type {code}")
    try:
        datatype, shape, data = msgpack.unpackb(payload, raw=False)
        dtype = numpy_dtype(datatype)
        dims = _dims(shape)
        if datatype == "BYTES":
            if not isinstance(data, list) or len(data) != math.prod(dims):
                raise DecodeError(
                    f"malformed n-d array in envelope: BYTES data must be a list of "
                    f"{math.prod(dims)} items for shape {list(dims)}"
                )
            data = bytes_items(data)  # every item bytes or text (raises otherwise)
        elif not isinstance(data, bytes) or math.prod(dims) * dtype.itemsize != len(data):
            raise DecodeError(  # np.ndarray would take a prefix of longer data
                f"malformed n-d array in envelope: {_size(data)} for shape {list(dims)} of "
                f"{datatype}"
            )
        return datatype, dims, data
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"malformed n-d array in envelope: {exc}") from exc


def unpack_arrays(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields with the n-d arrays ``decode_envelope(arrays=False)`` kept packed decoded."""
    return {
        name: _unpack_ext(*value) if type(value) is msgpack.ExtType else value
        for name, value in fields.items()
    }


def _dims(shape: Any) -> tuple[int, ...]:
    """An n-d array's shape: a list of non-negative ints."""
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise DecodeError(
            f"malformed n-d array in envelope: shape must be a list of non-negative ints, "
            f"got {_shown(shape)}"
        )
    return tuple(shape)


def _size(data: Any) -> str:
    return f"{len(data)} bytes" if isinstance(data, bytes) else f"a {type(data).__name__}"
