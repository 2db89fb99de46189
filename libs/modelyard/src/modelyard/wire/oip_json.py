"""OIP v2 JSON inference requests and responses as Kafka message values.

Lets a producer without modelyard's library (kcat, Java, Go) send a request: the value is the
protocol's JSON body, the ``content-type`` header is ``application/json``, and the reply comes
back as an OIP JSON response (or ``{"id": ..., "error": "..."}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelyard.errors import DecodeError, ModelyardError
from modelyard.tensors import bytes_items, datatype_of, numpy_dtype
from modelyard.wire.envelope import Envelope

__all__ = ["decode_oip_json", "encode_oip_json_error", "encode_oip_json_response"]


def decode_oip_json(data: bytes, key: str | None) -> Envelope:
    """An OIP v2 JSON request as an envelope; the request id is ``id`` or else the message key."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"value is not valid JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise DecodeError("OIP v2 JSON request must be an object with an 'inputs' list")
    request_id = body.get("id") or key
    if not isinstance(request_id, str) or not request_id:
        raise DecodeError("OIP v2 JSON request needs an 'id' or a message key")
    fields = {_name(t): _tensor(t) for t in body["inputs"]}
    params = body.get("parameters")
    if not isinstance(params, dict):
        params = {}
    caller = params.get("caller") if isinstance(params.get("caller"), str) else None
    return Envelope(request_id=request_id, fields=fields, caller=caller)


def _name(tensor: Any) -> str:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise DecodeError("each input needs a string 'name'")
    return str(tensor["name"])


def _tensor(tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
    name, datatype, shape = tensor["name"], tensor.get("datatype"), tensor.get("shape")
    if not isinstance(datatype, str) or not isinstance(shape, list):
        raise DecodeError(f"input {name!r} needs 'datatype' and 'shape'")
    try:
        dtype = numpy_dtype(datatype)
    except ModelyardError as exc:
        raise DecodeError(f"input {name!r}: {exc.message}") from exc
    data = np.asarray(tensor.get("data", []), dtype=object).reshape(-1)
    try:
        if datatype == "BYTES":
            flat = np.empty(len(data), dtype=object)
            flat[:] = bytes_items(data)
            return flat.reshape(shape)
        return data.astype(dtype).reshape(shape)
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"input {name!r}: data does not fit {datatype} {shape}: {exc}") from exc


def encode_oip_json_response(envelope: Envelope, outputs: Mapping[str, Any]) -> bytes:
    body = {
        "model_name": envelope.model,
        "model_version": envelope.version,
        "id": envelope.request_id,
        "outputs": [_output(name, np.asarray(value)) for name, value in outputs.items()],
    }
    return json.dumps(body).encode()


def _output(name: str, array: np.ndarray[Any, Any]) -> dict[str, Any]:
    datatype = datatype_of(array)
    flat = array.reshape(-1).tolist()
    if datatype == "BYTES":
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": flat}


def encode_oip_json_error(request_id: str | None, code: str, message: str) -> bytes:
    return json.dumps({"id": request_id, "error": message, "code": code}).encode()
