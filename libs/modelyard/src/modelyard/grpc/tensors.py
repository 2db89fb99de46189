"""OIP v2 gRPC tensors <-> numpy arrays.

A request input carries its data either in typed ``contents`` or in the matching entry of
``raw_input_contents`` (little-endian bytes; BYTES elements each prefixed with a 4-byte
little-endian length, as Triton and its clients do). Outputs are encoded the same way back:
raw when the request was raw (what ``tritonclient`` sends by default), typed otherwise.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelyard.api.oip.v2 import grpc_service_pb2 as pb
from modelyard.errors import DecodeError, ValidationError
from modelyard.tensors import DATATYPES, as_tensor, bytes_items, datatype_of, numpy_dtype

__all__ = ["CONTENTS_FIELD", "decode_inputs", "decode_tensor", "encode_outputs"]

Array = np.ndarray[Any, Any]

# The InferTensorContents field that holds each datatype's typed data. FP16 has none: the
# protocol only carries it raw.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# numpy dtype of each typed field's wire values (8/16-bit ints travel widened to 32 bits)
_FIELD_DTYPE: dict[str, type[np.generic]] = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}
_LENGTH = struct.Struct("<I")  # BYTES element length prefix in raw contents


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, Array]:
    """The request's inputs as named arrays; raises DecodeError or ValidationError."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise DecodeError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    arrays: dict[str, Array] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise DecodeError(f"input {tensor.name!r} is given more than once")
        arrays[tensor.name] = decode_tensor(tensor, raw[index] if raw else None)
    return arrays


def decode_tensor(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Array:
    """One input as an array of its declared datatype and shape."""
    name = tensor.name
    dtype = _dtype(name, tensor.datatype)
    shape = tuple(tensor.shape)
    if shape and min(shape) < 0:  # no generator: this runs for every input of every call
        raise ValidationError(f"input {name!r}: shape {list(shape)} has a negative dimension")
    if raw is not None:
        _refuse_both(tensor)
        if dtype is not _OBJECT:  # numbers: shaped straight from the raw bytes
            return _from_raw_numbers(name, tensor.datatype, raw, shape, dtype)
    flat = (
        _from_contents(name, tensor.datatype, tensor.contents, dtype)
        if raw is None
        else _bytes_array(_split_lengths(name, raw))
    )
    count = math.prod(shape)
    if flat.size != count:
        raise ValidationError(
            f"input {name!r}: shape {list(shape)} needs {count} elements, got {flat.size}"
        )
    try:
        return flat.reshape(shape)
    except ValueError as exc:  # no elements, but dims numpy cannot address ([0, 2**62, 2**62])
        raise _unshapeable(name, shape, exc) from None


def encode_outputs(
    response: pb.ModelInferResponse, outputs: Mapping[str, Array], *, raw: bool
) -> None:
    """Append ``outputs`` to ``response``, all raw or all typed (the protocol forbids mixing)."""
    tensors = [(name, as_tensor(array)) for name, array in outputs.items()]
    types = [datatype_of(array) for _, array in tensors]
    raw = raw or "FP16" in types  # FP16 has no typed field
    for (name, array), datatype in zip(tensors, types, strict=True):
        out = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(_to_raw(array, datatype))
        else:
            _to_contents(out.contents, array, datatype)


def _dtype(name: str, datatype: str) -> np.dtype[Any]:
    try:
        return numpy_dtype(datatype)
    except ValidationError as exc:
        raise ValidationError(f"input {name!r}: {exc.message}") from None


def _refuse_both(tensor: pb.ModelInferRequest.InferInputTensor) -> None:
    if tensor.HasField("contents") and tensor.contents.ListFields():
        raise DecodeError(f"input {tensor.name!r} has both contents and raw_input_contents")


def _from_contents(
    name: str, datatype: str, contents: pb.InferTensorContents, dtype: np.dtype[Any]
) -> Array:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise ValidationError(f"input {name!r}: {datatype} data must be sent in raw_input_contents")
    others = sorted(f.name for f, _ in contents.ListFields() if f.name != field)
    if others:
        raise ValidationError(f"input {name!r}: {datatype} data belongs in {field}, not {others}")
    values = getattr(contents, field)
    if datatype == "BYTES":
        return _bytes_array(list(values))
    return _narrow(name, datatype, np.asarray(values, dtype=_FIELD_DTYPE[field]), dtype)


def _narrow(name: str, datatype: str, wide: Array, dtype: np.dtype[Any]) -> Array:
    """``wide`` as ``dtype``, refusing 8/16-bit integers that do not fit."""
    narrow = wide.astype(dtype)
    if dtype.kind in "iu" and not np.array_equal(narrow, wide):
        raise ValidationError(f"input {name!r}: values out of range for {datatype}")
    return narrow


def _from_raw_numbers(
    name: str, datatype: str, raw: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> Array:
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise ValidationError(
            f"input {name!r}: {len(raw)} raw bytes do not hold {count} {datatype} elements"
        )
    # one call for the shaped view; copied because a view of bytes is read-only and models may
    # reasonably write to their inputs
    try:
        return np.ndarray(shape, dtype, raw).copy()
    except ValueError as exc:  # no elements, but dims numpy cannot address, or rank > 64
        raise _unshapeable(name, shape, exc) from None


def _unshapeable(name: str, shape: tuple[int, ...], exc: ValueError) -> ValidationError:
    return ValidationError(f"input {name!r}: shape {list(shape)} cannot be represented: {exc}")


_OBJECT = DATATYPES["BYTES"]


def _split_lengths(name: str, raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise DecodeError(f"input {name!r}: raw BYTES data ends inside a length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise DecodeError(f"input {name!r}: raw BYTES element overruns the data")
        items.append(raw[offset : offset + length])
        offset += length
    return items


def _bytes_array(items: Sequence[bytes]) -> Array:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


def _to_raw(array: Array, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(v)) + v for v in _bytes_items(array))
    # contiguous little-endian bytes whatever the array's layout or byte order
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()


def _to_contents(contents: pb.InferTensorContents, array: Array, datatype: str) -> None:
    field = getattr(contents, CONTENTS_FIELD[datatype])
    if datatype == "BYTES":
        field.extend(_bytes_items(array))
    else:
        field.extend(array.reshape(-1).tolist())


def _bytes_items(array: Array) -> list[bytes]:
    return bytes_items(array.reshape(-1).tolist())
