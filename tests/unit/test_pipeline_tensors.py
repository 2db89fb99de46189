"""modelyard.pipeline.v1.Tensor <-> arrays: every datatype round-trips, bad tensors are refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from modelyard.api.pipeline.v1 import pipeline_pb2 as pb
from modelyard.errors import DecodeError, ModelError, ValidationError
from modelyard.gateway.tensors import from_proto, inputs_from_proto, outputs_to_proto, to_proto
from modelyard.tensors import DATATYPES

Array = np.ndarray[Any, Any]


def sample(datatype: str) -> Array:
    """A 2x3 tensor of ``datatype`` with values near each type's edges."""
    if datatype == "BYTES":
        items = [b"", b"a", b"\x00\xff", "héllo".encode(), b"x" * 300, b"z"]
        out = np.empty(6, dtype=object)
        out[:] = items
        return out.reshape(2, 3)
    dtype = DATATYPES[datatype]
    if datatype == "BOOL":
        return np.array([True, False, True, True, False, False]).reshape(2, 3)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([info.min, info.max, 0, 1, info.max - 1, 7], dtype=dtype).reshape(2, 3)
    return np.array([0.5, -1.25, 3.0, np.inf, -0.0, 65504.0], dtype=dtype).reshape(2, 3)


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_round_trips(datatype: str) -> None:
    array = sample(datatype)
    tensor = to_proto("t", array)
    assert (tensor.datatype, list(tensor.shape)) == (datatype, [2, 3])
    wire = pb.Tensor.FromString(tensor.SerializeToString())
    back = from_proto(wire)
    assert back.shape == (2, 3)
    assert back.dtype == array.dtype
    assert back.tolist() == array.tolist()


def test_raw_contents_are_little_endian_row_major() -> None:
    array = np.array([[1, 2], [3, 258]], dtype=">i2")  # big-endian, to prove the conversion
    tensor = to_proto("t", array)
    assert tensor.datatype == "INT16"
    assert tensor.raw_contents == b"\x01\x00\x02\x00\x03\x00\x02\x01"
    assert not tensor.bytes_contents


def test_bytes_contents_hold_one_entry_per_element() -> None:
    tensor = to_proto("t", ["a", b"b"])
    assert (tensor.datatype, list(tensor.shape), list(tensor.bytes_contents)) == (
        "BYTES",
        [2],
        [b"a", b"b"],
    )
    assert not tensor.raw_contents


def test_scalars_have_an_empty_shape() -> None:
    back = from_proto(to_proto("n", 7))
    assert back.shape == ()
    assert back.item() == 7


def test_outputs_leave_out_absent_fields() -> None:
    tensors = outputs_to_proto({"text": b"hi", "translation": None, "score": np.float32(0.5)})
    assert [(t.name, t.datatype) for t in tensors] == [("text", "BYTES"), ("score", "FP32")]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (pb.Tensor(name="x", datatype="FP8", shape=[1]), "unknown datatype"),
        (pb.Tensor(name="x", datatype="FP32", shape=[-1]), "negative dimension"),
        (pb.Tensor(name="x", datatype="FP32", shape=[2], raw_contents=b"\0" * 7), "raw bytes"),
        (pb.Tensor(name="x", datatype="FP32", shape=[1], bytes_contents=[b"a"]), "raw_contents"),
        (pb.Tensor(name="x", datatype="BYTES", shape=[2], bytes_contents=[b"a"]), "2 elements"),
        (pb.Tensor(name="x", datatype="BYTES", shape=[0], raw_contents=b"a"), "bytes_contents"),
    ],
)
def test_malformed_tensors_are_refused(tensor: pb.Tensor, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        from_proto(tensor)


def test_inputs_need_unique_names() -> None:
    one = pb.Tensor(name="x", datatype="BYTES", shape=[1], bytes_contents=[b"a"])
    with pytest.raises(DecodeError, match="more than once"):
        inputs_from_proto([one, one])
    with pytest.raises(ValidationError, match="needs a name"):
        inputs_from_proto([pb.Tensor(datatype="BYTES", shape=[0])])


NUMERIC = sorted(set(DATATYPES) - {"BYTES"})


@given(
    datatype=st.sampled_from(NUMERIC),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    data=st.data(),
)
def test_any_numeric_array_round_trips_bit_for_bit(
    datatype: str, shape: tuple[int, ...], data: st.DataObject
) -> None:
    array = data.draw(hnp.arrays(DATATYPES[datatype], shape))
    back = from_proto(pb.Tensor.FromString(to_proto("t", array).SerializeToString()))
    assert back.shape == array.shape
    assert back.tobytes() == np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()


@given(st.lists(st.binary(max_size=40), max_size=6))
def test_any_bytes_elements_round_trip(items: list[bytes]) -> None:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    assert from_proto(to_proto("t", array)).tolist() == items


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [1] * 70])
def test_shapes_numpy_cannot_hold_are_validation_errors(datatype: str, shape: list[int]) -> None:
    tensor = pb.Tensor(name="x", datatype=datatype, shape=shape)
    if 0 not in shape:
        if datatype == "BYTES":
            tensor.bytes_contents.append(b"x")
        else:
            tensor.raw_contents = b"\x00" * 4
    with pytest.raises(ValidationError, match="cannot be represented"):
        from_proto(tensor)


@pytest.mark.parametrize("value", [[[1, 2], [3]], {"a": 1}, [None], ["a", 1], 2**70])
def test_result_fields_that_are_no_tensor_are_the_models_fault(value: object) -> None:
    # a stage's output the gateway cannot return: a ModelError, not the caller's validation
    with pytest.raises(ModelError, match="output 'y' cannot be returned as a tensor"):
        outputs_to_proto({"y": value})
