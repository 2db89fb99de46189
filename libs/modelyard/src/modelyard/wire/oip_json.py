"""OIP v2 JSON inference requests and responses as Kafka message values.

Lets a producer without modelyard's library (kcat, Java, Go) send a request: the value is the
protocol's JSON body, the ``content-type`` header is ``application/json``, and the reply comes
back as an OIP JSON response (or ``{"id": ..., "error": "..."}``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelyard.errors import DecodeError, ModelError, ModelyardError
from modelyard.tensors import bytes_items, datatype_of, numpy_dtype
from modelyard.wire.envelope import MAX_CALLER_LENGTH, MAX_NAME_LENGTH, Envelope

__all__ = ["decode_oip_json", "encode_oip_json_error", "encode_oip_json_response"]


def decode_oip_json(data: bytes, key: str | None) -> Envelope:
    """An OIP v2 JSON request as an envelope; the request id is ``id`` or else the message key."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"value is not valid JSON: {exc}") from exc
    except RecursionError:
        raise DecodeError("value is JSON nested too deeply") from None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise DecodeError("OIP v2 JSON request must be an object with an 'inputs' list")
    request_id = body.get("id") or key
    if not isinstance(request_id, str) or not request_id:
        raise DecodeError("OIP v2 JSON request needs an 'id' or a message key")
    _encodable(request_id, "request id")
    if len(request_id) > MAX_NAME_LENGTH:
        raise DecodeError(
            f"request id is {len(request_id)} characters; the limit is {MAX_NAME_LENGTH}"
        )
    fields: dict[str, np.ndarray[Any, Any]] = {}
    for tensor in body["inputs"]:
        name = _name(tensor)
        if name in fields:
            raise DecodeError(f"input {name!r} is given twice")
        fields[name] = _tensor(tensor)
    params = body.get("parameters")
    if not isinstance(params, dict):
        params = {}
    caller = params.get("caller") if isinstance(params.get("caller"), str) else None
    if caller is not None and len(caller) > MAX_CALLER_LENGTH:
        raise DecodeError(f"caller is {len(caller)} characters; the limit is {MAX_CALLER_LENGTH}")
    if caller is not None:
        _encodable(caller, "caller")
    return Envelope(request_id=request_id, fields=fields, caller=caller)


def _name(tensor: Any) -> str:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise DecodeError("each input needs a string 'name'")
    return _encodable(tensor["name"], "input name")


def _encodable(text: str, what: str) -> str:
    """``text`` if it is valid Unicode; JSON's ``\\ud800`` escapes give lone surrogates, which
    no producer could write back into a header, a key or a reply."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise DecodeError(f"{what} holds a lone surrogate (not valid Unicode)") from None
    return text


def _tensor(tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
    """One input as an array, refused unless its data holds exactly ``shape``'s element count
    of values of its datatype (nested lists are read row-major, as the protocol allows)."""
    name, datatype, shape = tensor["name"], tensor.get("datatype"), tensor.get("shape")
    if not isinstance(datatype, str) or not isinstance(shape, list):
        raise DecodeError(f"input {name!r} needs 'datatype' and 'shape'")
    if not all(type(d) is int and d >= 0 for d in shape):
        raise DecodeError(f"input {name!r}: shape must be a list of non-negative ints")
    try:
        dtype = numpy_dtype(datatype)
    except ModelyardError as exc:
        raise DecodeError(f"input {name!r}: {exc.message}") from exc
    data = tensor.get("data", [])
    if not isinstance(data, list):
        raise DecodeError(f"input {name!r}: 'data' must be a list")
    flat = _flattened(data)
    if len(flat) != math.prod(shape):
        raise DecodeError(
            f"input {name!r}: {len(flat)} elements in 'data' for shape {shape} "
            f"({math.prod(shape)} expected)"
        )
    check = _ELEMENT_CHECKS.get(dtype.kind, _is_number)
    for value in flat:
        if not check(value):
            raise DecodeError(f"input {name!r}: {type(value).__name__} element in {datatype} data")
    try:
        if datatype == "BYTES":
            array = np.empty(len(flat), dtype=object)
            array[:] = bytes_items(flat)
            return array.reshape(shape)
        with np.errstate(over="raise"):  # 1e300 as FP16 is refused, not made inf
            return np.array(flat, dtype=dtype).reshape(shape)
    except (ValueError, TypeError, OverflowError, FloatingPointError, ModelyardError) as exc:
        raise DecodeError(f"input {name!r}: data does not fit {datatype} {shape}: {exc}") from exc


def _flattened(data: list[Any]) -> list[Any]:
    """Leaves of nested lists, row-major, without recursion (nesting depth is the sender's)."""
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


# what a JSON element must be for a datatype, by numpy kind; numpy converts the rest (ints out of
# range raise OverflowError there)
_ELEMENT_CHECKS = {"b": _is_bool, "i": _is_int, "u": _is_int, "f": _is_number, "O": _is_text}


def encode_oip_json_response(envelope: Envelope, outputs: Mapping[str, Any]) -> bytes:
    """Raises ModelError for an output that is no tensor (ragged, nested past numpy's limit)."""
    body = {
        "model_name": envelope.model,
        "model_version": envelope.version,
        "id": envelope.request_id,
        "outputs": [_output(name, value) for name, value in outputs.items()],
    }
    return json.dumps(body).encode()


def _output(name: str, value: Any) -> dict[str, Any]:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"output {name!r} is not a tensor: {exc}") from None
    datatype = datatype_of(array)
    flat = array.reshape(-1).tolist()
    if datatype == "BYTES":
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": flat}


def encode_oip_json_error(request_id: str | None, code: str, message: str) -> bytes:
    return json.dumps({"id": request_id, "error": message, "code": code}).encode()
