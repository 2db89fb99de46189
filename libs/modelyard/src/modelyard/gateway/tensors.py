"""``modelyard.pipeline.v1.Tensor`` <-> the values of envelope fields (numpy arrays).

BYTES tensors carry one ``bytes_contents`` entry per element; every other datatype carries its
elements row-major and little-endian in ``raw_contents`` (pipeline.proto documents the layout).
Decoding refuses anything ambiguous with a ValidationError or DecodeError naming the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from modelyard.api.pipeline.v1 import pipeline_pb2 as pb
from modelyard.errors import DecodeError, ModelError, ValidationError
from modelyard.tensors import as_tensor, bytes_items, datatype_of, numpy_dtype

__all__ = ["from_proto", "inputs_from_proto", "outputs_to_proto", "to_proto"]

Array = np.ndarray[Any, Any]


def inputs_from_proto(tensors: Iterable[pb.Tensor]) -> dict[str, Array]:
    """Named arrays from request tensors; a name given twice is refused."""
    arrays: dict[str, Array] = {}
    for tensor in tensors:
        if not tensor.name:
            raise ValidationError("every input tensor needs a name")
        if tensor.name in arrays:
            raise DecodeError(f"input {tensor.name!r} is given more than once")
        arrays[tensor.name] = from_proto(tensor)
    return arrays


def from_proto(tensor: pb.Tensor) -> Array:
    """One tensor as an array of its datatype and shape (BYTES: an object array of bytes)."""
    name, datatype = tensor.name, tensor.datatype
    try:
        dtype = numpy_dtype(datatype)
    except ValidationError as exc:
        raise ValidationError(f"tensor {name!r}: {exc.message}") from None
    shape = tuple(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise ValidationError(f"tensor {name!r}: shape {list(shape)} has a negative dimension")
    count = math.prod(shape)
    flat = _bytes(tensor, count) if datatype == "BYTES" else _raw(tensor, dtype, count)
    try:
        return flat.reshape(shape)
    except ValueError as exc:  # no elements, but dims numpy cannot address, or rank > 64
        raise ValidationError(
            f"tensor {name!r}: shape {list(shape)} cannot be represented: {exc}"
        ) from None


def outputs_to_proto(fields: Mapping[str, Any]) -> list[pb.Tensor]:
    """Result fields as tensors; fields without a value (a skipped stage's) are left out.

    Result fields are stage outputs as the stages sent them: one that is no tensor (a ragged
    list, a map) raises ModelError, the stage's fault, not the caller's.
    """
    out = []
    for name, value in fields.items():
        if value is None:
            continue
        try:
            out.append(to_proto(name, value))
        except ValidationError as exc:
            raise ModelError(
                f"output {name!r} cannot be returned as a tensor: {exc.message}"
            ) from None
    return out


def to_proto(name: str, value: Any) -> pb.Tensor:
    """Any envelope field value (array, str, bytes, number, list) as a named tensor."""
    array = as_tensor(value)
    datatype = datatype_of(array)
    out = pb.Tensor(name=name, datatype=datatype, shape=list(array.shape))
    if datatype == "BYTES":
        out.bytes_contents.extend(bytes_items(array.reshape(-1).tolist()))
    else:
        # contiguous little-endian whatever the array's layout or byte order
        out.raw_contents = np.ascontiguousarray(array, dtype=numpy_dtype(datatype)).tobytes()
    return out


def _bytes(tensor: pb.Tensor, count: int) -> Array:
    if tensor.raw_contents:
        raise ValidationError(f"tensor {tensor.name!r}: BYTES elements go in bytes_contents")
    if len(tensor.bytes_contents) != count:
        raise ValidationError(
            f"tensor {tensor.name!r}: shape {list(tensor.shape)} needs {count} elements, "
            f"got {len(tensor.bytes_contents)}"
        )
    out = np.empty(count, dtype=object)
    out[:] = list(tensor.bytes_contents)
    return out


def _raw(tensor: pb.Tensor, dtype: np.dtype[Any], count: int) -> Array:
    if tensor.bytes_contents:
        raise ValidationError(
            f"tensor {tensor.name!r}: {tensor.datatype} data goes in raw_contents"
        )
    raw = tensor.raw_contents
    if len(raw) != count * dtype.itemsize:
        raise ValidationError(
            f"tensor {tensor.name!r}: {len(raw)} raw bytes do not hold {count} "
            f"{tensor.datatype} elements of {dtype.itemsize} bytes"
        )
    if tensor.datatype == "BOOL":  # any non-zero byte is true, as a C reader would take it
        return np.frombuffer(raw, dtype=np.uint8).astype(bool)
    # no copy: the array is only read, to be packed into the request envelope
    return np.frombuffer(raw, dtype=dtype)
