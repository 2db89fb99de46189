"""Input validation against a manifest's tensor specs."""

from __future__ import annotations

import numpy as np
import pytest
from modelyard.errors import ValidationError
from modelyard.tensors import InputValidator, TensorSpec

SPECS = [
    TensorSpec(name="x", datatype="FP32", shape=(-1, 2)),
    TensorSpec(name="t", datatype="BYTES", shape=(-1,), optional=True),
]
validate = InputValidator(SPECS)


def test_matching_arrays_pass_unchanged_and_others_are_coerced() -> None:
    x = np.zeros((3, 2), dtype=np.float32)
    out = validate({"x": x, "t": ["a", b"b"]})
    assert out["x"] is x
    assert out["t"].tolist() == [b"a", b"b"]
    assert validate({"x": x.astype(">f4")})["x"].shape == (3, 2)  # FP32 in either byte order


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"x": np.zeros((3, 3), np.float32)}, r"expected shape \[-1, 2\], got \[3, 3\]"),
        ({"x": np.zeros((3, 2), np.float64)}, "expected FP32, got FP64"),
        ({"x": np.zeros((1, 2), np.float32), "y": 1}, r"unknown input\(s\) \['y'\]"),
        ({"t": ["a"]}, "missing input 'x'"),
    ],
)
def test_mismatches_are_refused_with_a_readable_reason(
    fields: dict[str, object], reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        validate(fields)


TEXT = InputValidator([TensorSpec(name="text", datatype="BYTES", shape=(-1,))])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([None], "got NoneType"),
        ([{"a": 1}], "got dict"),
        ([1, "a"], "got int"),
        (None, "expected numbers or text, got NoneType"),
        ({}, "expected numbers or text, got dict"),
        ([[1], [1, 2]], "cannot be read as a tensor"),
        ([2**70], "got int"),
        (["\udc80"], "cannot be encoded as UTF-8"),
        (np.array([None, b"x"], dtype=object), "got NoneType"),
        (np.array([1j]), "has no OIP datatype"),
    ],
)
def test_values_that_are_neither_numbers_nor_text_are_refused(value: object, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        TEXT({"text": value})


def test_accepted_bytes_tensors_hold_only_bytes() -> None:
    clean = np.array([b"a"], dtype=object)
    assert TEXT({"text": clean})["text"] is clean  # nothing to convert: no copy
    assert TEXT({"text": np.array(["a", b"b"], dtype=object)})["text"].tolist() == [b"a", b"b"]
    assert TEXT({"text": np.array(["ü"])})["text"].tolist() == ["ü".encode()]


@pytest.mark.parametrize("shape", [(-2,), (3, -7)])
def test_a_spec_dimension_below_minus_one_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="greater than or equal to -1"):
        TensorSpec(name="x", datatype="FP32", shape=shape)
