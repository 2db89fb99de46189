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
