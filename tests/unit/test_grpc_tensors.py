"""OIP v2 gRPC tensor codec: typed and raw contents, every datatype, and the errors."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from modelyard.api.oip.v2 import grpc_service_pb2 as pb
from modelyard.errors import DecodeError, ValidationError
from modelyard.grpc.tensors import decode_inputs, encode_outputs
from modelyard.tensors import DATATYPES

Array = np.ndarray[Any, Any]


def sample(datatype: str) -> Array:
    """A 2x3 tensor of ``datatype`` using values near each type's edges."""
    if datatype == "BYTES":
        return np.array([b"", b"a", b"\x00\xff", "héllo".encode(), b"x" * 300, b"z"], dtype=object)
    dtype = DATATYPES[datatype]
    if datatype == "BOOL":
        return np.array([True, False, True, True, False, False]).reshape(2, 3)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([info.min, info.max, 0, 1, info.max - 1, 7], dtype=dtype).reshape(2, 3)
    return np.array([0.5, -1.25, 3.0, np.inf, -0.0, 65504.0], dtype=dtype).reshape(2, 3)


def as_request(response: pb.ModelInferResponse) -> pb.ModelInferRequest:
    """The outputs of a response sent back as the inputs of a request (same wire layout)."""
    request = pb.ModelInferRequest(raw_input_contents=response.raw_output_contents)
    for out in response.outputs:
        tensor = request.inputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        if out.HasField("contents"):
            tensor.contents.CopyFrom(out.contents)
    return request


def round_trip(
    arrays: dict[str, Array], *, raw: bool
) -> tuple[pb.ModelInferResponse, dict[str, Array]]:
    response = pb.ModelInferResponse()
    encode_outputs(response, arrays, raw=raw)
    return response, decode_inputs(as_request(response))


def typed_input(
    name: str, datatype: str, shape: list[int], **contents: Any
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest()
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return request


def raw_input(name: str, datatype: str, shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(raw_input_contents=[raw])
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_round_trips(datatype: str, raw: bool) -> None:
    array = sample(datatype)
    response, decoded = round_trip({"t": array}, raw=raw)
    assert response.outputs[0].datatype == datatype
    assert list(response.outputs[0].shape) == list(array.shape)
    assert bool(response.raw_output_contents) == (raw or datatype == "FP16")
    got = decoded["t"]
    assert got.dtype == array.dtype
    assert got.shape == array.shape
    assert got.tolist() == array.tolist()


def test_raw_bytes_use_a_little_endian_length_prefix_per_element() -> None:
    response = pb.ModelInferResponse()
    encode_outputs(response, {"s": np.array([b"hi", b"", b"abc"], dtype=object)}, raw=True)
    assert response.raw_output_contents[0] == b"\x02\0\0\0hi\0\0\0\0\x03\0\0\0abc"


def test_str_arrays_and_big_endian_or_strided_arrays_encode_as_oip() -> None:
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)[:, ::2]
    response, decoded = round_trip({"words": np.array(["ok", "né"]), "n": big_endian}, raw=True)
    assert [o.datatype for o in response.outputs] == ["BYTES", "INT32"]
    assert decoded["words"].tolist() == [b"ok", "né".encode()]
    assert response.raw_output_contents[1] == struct.pack("<4i", 0, 2, 3, 5)
    assert decoded["n"].tolist() == [[0, 2], [3, 5]]


def test_raw_inputs_decode_to_writable_arrays() -> None:
    decoded = decode_inputs(raw_input("x", "FP32", [2], struct.pack("<2f", 1.0, 2.0)))
    decoded["x"][0] = 5.0  # models may work in place
    assert decoded["x"].tolist() == [5.0, 2.0]


def test_empty_tensors_and_several_inputs() -> None:
    request = typed_input("a", "INT64", [0, 3])
    request.inputs.add(name="b", datatype="FP64", shape=[1]).contents.fp64_contents.append(2.5)
    decoded = decode_inputs(request)
    assert decoded["a"].shape == (0, 3)
    assert decoded["b"].tolist() == [2.5]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (typed_input("x", "FP32", [2, 2], fp32_contents=[1, 2, 3]), "needs 4 elements, got 3"),
        (typed_input("x", "BYTES", [3], bytes_contents=[b"a"]), "needs 3 elements, got 1"),
        (raw_input("x", "FP32", [2], b"\0" * 12), "12 raw bytes do not hold 2 FP32"),
        (raw_input("x", "BYTES", [2], b"\1\0\0\0a"), "needs 2 elements, got 1"),
        (typed_input("x", "FLOAT", [1], fp32_contents=[1]), "unknown datatype 'FLOAT'"),
        (typed_input("x", "FP16", [1]), "FP16 data must be sent in raw_input_contents"),
        (typed_input("x", "FP32", [1], int_contents=[1]), "belongs in fp32_contents"),
        (typed_input("x", "INT8", [1], int_contents=[300]), "out of range for INT8"),
        (typed_input("x", "UINT16", [1], uint_contents=[70000]), "out of range for UINT16"),
        (typed_input("x", "FP32", [-1], fp32_contents=[1]), "negative dimension"),
    ],
)
def test_invalid_tensors_are_validation_errors(
    request_: pb.ModelInferRequest, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        decode_inputs(request_)
    assert "'x'" in caught.value.message  # every message names the input


def test_malformed_requests_are_decode_errors() -> None:
    short = raw_input("x", "FP32", [1], b"\0" * 4)
    short.inputs.add(name="y", datatype="FP32", shape=[1])
    with pytest.raises(DecodeError, match="1 entries for 2 inputs"):
        decode_inputs(short)
    with pytest.raises(DecodeError, match="ends inside a length prefix"):
        decode_inputs(raw_input("x", "BYTES", [1], b"\1\0"))
    with pytest.raises(DecodeError, match="overruns"):
        decode_inputs(raw_input("x", "BYTES", [1], b"\5\0\0\0ab"))
    both = raw_input("x", "FP32", [1], b"\0" * 4)
    both.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(DecodeError, match="both contents and raw_input_contents"):
        decode_inputs(both)
    twice = typed_input("x", "FP32", [1], fp32_contents=[1])
    twice.inputs.append(twice.inputs[0])
    with pytest.raises(DecodeError, match="more than once"):
        decode_inputs(twice)


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [1] * 70])
def test_shapes_numpy_cannot_hold_are_validation_errors(
    raw: bool, datatype: str, shape: list[int]
) -> None:
    # no elements (or one), but dims numpy cannot address: it raised ValueError
    request = pb.ModelInferRequest()
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    count = 0 if 0 in shape else 1
    if raw:
        item = b"\x01\x00\x00\x00x" if datatype == "BYTES" else b"\x00" * 4
        request.raw_input_contents.append(item * count)
    elif datatype == "BYTES":
        tensor.contents.bytes_contents.extend([b"x"] * count)
    else:
        tensor.contents.fp32_contents.extend([0.0] * count)
    with pytest.raises(ValidationError, match="cannot be represented"):
        decode_inputs(request)
