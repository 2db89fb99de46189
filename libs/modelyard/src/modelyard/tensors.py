"""Tensor datatypes and specs shared by manifests, the Kafka envelope and OIP v2.

Datatype names are the Open Inference Protocol's (``FP32``, ``INT64``, ``BYTES``...), so the
metadata a stage reports over gRPC is the manifest's text unchanged. ``BYTES`` tensors are numpy
object arrays holding ``bytes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelyard.errors import ValidationError

__all__ = [
    "DATATYPES",
    "InputValidator",
    "TensorSpec",
    "as_tensor",
    "bytes_items",
    "datatype_of",
    "numpy_dtype",
    "shape_matches",
    "validate_inputs",
]

# OIP v2 datatype -> numpy dtype (little endian, as OIP raw contents are)
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_KIND = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items() if name != "BYTES"}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise ValidationError(
            f"unknown datatype {datatype!r}; expected one of {sorted(DATATYPES)}"
        ) from None


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """The OIP datatype name of a numpy array (object, str and bytes arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_KIND[(array.dtype.kind, array.dtype.itemsize)]
    except KeyError:
        raise ValidationError(f"numpy dtype {array.dtype} has no OIP datatype") from None


def as_tensor(value: Any) -> np.ndarray[Any, Any]:
    """A field value as a tensor: str/bytes become a 1-element BYTES tensor, numbers 1-element.

    Anything that is neither numbers nor text (None, maps, a list mixing text and numbers, a
    ragged list, an int beyond 64 bits) raises ValidationError: a value accepted here can always
    be encoded for the wire.
    """
    if isinstance(value, np.ndarray):
        return _checked_array(value)
    if isinstance(value, str | bytes):
        return _bytes_tensor([value])
    if isinstance(value, list | tuple) and value and all(isinstance(v, str | bytes) for v in value):
        return _bytes_tensor(list(value))
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a ragged list
        raise ValidationError(f"value cannot be read as a tensor: {exc}") from None
    if array.dtype.kind in "OSU":  # numpy made text or objects of something not purely text
        if array.ndim == 0 and not isinstance(value, np.generic):
            raise ValidationError(f"expected numbers or text, got {type(value).__name__}")
        try:
            array = np.array(value, dtype=object)
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"value cannot be read as a tensor: {exc}") from None
    return _checked_array(array)


def bytes_items(values: Iterable[Any]) -> list[bytes]:
    """The elements of a BYTES tensor as bytes; str elements are UTF-8 encoded.

    Raises ValidationError for any other element (None, numbers, lists, maps) and for str that
    cannot be encoded (lone surrogates).
    """
    try:
        return [_as_bytes(v) for v in values]
    except UnicodeEncodeError as exc:
        raise ValidationError(f"text element cannot be encoded as UTF-8: {exc}") from None


def _as_bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ValidationError(f"BYTES elements must be text or bytes, got {type(value).__name__}")


def _bytes_tensor(items: Sequence[Any]) -> np.ndarray[Any, Any]:
    out = np.empty(len(items), dtype=object)
    out[:] = bytes_items(items)
    return out


def _checked_array(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``array`` if it holds a datatype the wire carries; text and object arrays become BYTES
    arrays of bytes (every element checked); others raise ValidationError."""
    kind = array.dtype.kind
    if kind == "O":
        if all(type(v) is bytes for v in array.flat):  # already clean: no copy
            return array
        return _bytes_tensor(array.reshape(-1).tolist()).reshape(array.shape)
    if kind in "SU":
        return _bytes_tensor(array.reshape(-1).tolist()).reshape(array.shape)
    datatype_of(array)  # raises for dtypes with no OIP datatype (complex, datetime, records)
    return array


class TensorSpec(BaseModel):
    """One named input or output of a model: OIP datatype and shape (-1 for a free dim)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Tensor name, as the model and OIP clients see it.")
    datatype: str = Field(description="OIP datatype: FP32, INT64, BYTES, ...")
    shape: tuple[Annotated[int, Field(ge=-1)], ...] = Field(
        description="Dimensions; -1 marks a variable dimension."
    )
    optional: bool = Field(default=False, description="Inputs only: may be omitted.")

    def check(self, array: np.ndarray[Any, Any]) -> None:
        """Raise ValidationError unless ``array`` has this spec's datatype and shape."""
        got = datatype_of(array)
        if got != self.datatype:
            raise ValidationError(f"input {self.name!r}: expected {self.datatype}, got {got}")
        if not shape_matches(self.shape, array.shape):
            raise ValidationError(
                f"input {self.name!r}: expected shape {list(self.shape)}, got {list(array.shape)}"
            )


def shape_matches(spec: Sequence[int], shape: Sequence[int]) -> bool:
    if len(spec) != len(shape):
        return False
    for want, got in zip(spec, shape, strict=True):  # noqa: SIM110  # a loop: runs per message
        if want not in (-1, got):
            return False
    return True


def validate_inputs(
    specs: Sequence[TensorSpec], fields: Mapping[str, Any]
) -> dict[str, np.ndarray[Any, Any]]:
    """Coerce ``fields`` to tensors and check them against ``specs``; unknown names are refused."""
    return InputValidator(specs)(fields)


class InputValidator:
    """``validate_inputs`` for one fixed list of specs, prepared once (a stage validates every
    request against the same manifest)."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        # per spec: its numpy dtype, rank and the (axis, size) of its fixed dims, so the common
        # case (an array of the right dtype) costs a rank check and no loop over free dims
        self._specs = tuple(
            (
                spec,
                DATATYPES.get(spec.datatype),
                len(spec.shape),
                tuple((axis, size) for axis, size in enumerate(spec.shape) if size != -1),
            )
            for spec in specs
        )
        self._known = frozenset(spec.name for spec in specs)

    def __call__(self, fields: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
        if not fields.keys() <= self._known:
            unknown = sorted(set(fields) - self._known)
            raise ValidationError(
                f"unknown input(s) {unknown}; the model takes {sorted(self._known)}"
            )
        tensors: dict[str, np.ndarray[Any, Any]] = {}
        for spec, dtype, rank, fixed in self._specs:
            value = fields.get(spec.name, _MISSING)
            if value is _MISSING:
                if spec.optional:
                    continue
                raise ValidationError(f"missing input {spec.name!r}")
            # the common case first: already an array of the spec's dtype and rank
            if type(value) is np.ndarray and value.dtype == dtype and dtype is not _OBJECT:
                shape = value.shape
                if len(shape) != rank or (fixed and any(shape[a] != n for a, n in fixed)):
                    spec.check(value)  # raises with the readable message
                tensors[spec.name] = value
            else:
                tensors[spec.name] = _checked(spec, value)
        return tensors


_MISSING = object()
_OBJECT = DATATYPES["BYTES"]  # BYTES arrays take the checked path: every element must be bytes


def _checked(spec: TensorSpec, value: Any) -> np.ndarray[Any, Any]:
    tensor = as_tensor(value)
    spec.check(tensor)
    return tensor
