"""The msgpack envelope and OIP JSON values: round trips and readable failures."""

from __future__ import annotations

import contextlib
import json

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from modelyard.errors import DecodeError, ModelError
from modelyard.wire import Envelope, ErrorInfo, decode_envelope, encode_envelope
from modelyard.wire.headers import parse_meta
from modelyard.wire.oip_json import decode_oip_json, encode_oip_json_response


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<i8", "<i4", "<u1", "<f2", "?"])
def test_ndarray_round_trip(dtype: str) -> None:
    array = (np.arange(12) % 2).astype(dtype).reshape(3, 4)
    back = decode_envelope(encode_envelope(Envelope("r", {"a": array}))).fields["a"]
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_bytes_tensor_and_scalars_round_trip() -> None:
    text = np.array([b"x", b"", b"\x00\xff"], dtype=object)
    env = Envelope(
        "r1",
        {"t": text, "s": "hé", "b": b"\x01", "n": 3, "f": 1.5},
        pipeline="docs",
        stage="ocr",
        caller="alice",
        deadline_ms=1767225600000,
    )
    back = decode_envelope(encode_envelope(env))
    assert back.fields["t"].tolist() == [b"x", b"", b"\x00\xff"]
    assert (back.fields["s"], back.fields["b"], back.fields["n"], back.fields["f"]) == (
        "hé",
        b"\x01",
        3,
        1.5,
    )
    assert (back.pipeline, back.stage, back.caller, back.deadline_ms) == (
        "docs",
        "ocr",
        "alice",
        1767225600000,
    )


def test_reply_keeps_identity_and_carries_error() -> None:
    req = Envelope("r1", {"x": 1}, pipeline="p", caller="c")
    rep = decode_envelope(encode_envelope(req.reply({}, "m", "2", ErrorInfo("model", "boom", "s"))))
    assert (rep.request_id, rep.pipeline, rep.caller, rep.model, rep.version) == (
        "r1",
        "p",
        "c",
        "m",
        "2",
    )
    assert rep.error == ErrorInfo("model", "boom", "s")


def _array_value(datatype: str, shape: list[object], data: bytes) -> bytes:
    """An envelope whose one field is an n-d array extension with the given parts."""
    payload = msgpack.packb([datatype, shape, data])
    return msgpack.packb({"v": 1, "id": "r", "fields": {"a": msgpack.ExtType(1, payload)}})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xc1garbage", "not a msgpack envelope"),
        (msgpack.packb([1, 2]), "must be a map"),
        (msgpack.packb({"v": 99, "id": "r"}), "schema version"),
        (msgpack.packb({"v": 1}), "no request id"),
        (msgpack.packb({"v": 1, "id": "r", "fields": [1]}), "'fields' must be a map"),
        (msgpack.packb({"v": 1, "id": "r", "caller": 5}), "'caller' must be str"),
        (msgpack.packb({"v": 1, "id": "r", "fields": {"a": msgpack.ExtType(7, b"")}}), "extension"),
        (_array_value("FP32", [2, 2], b"\0" * 12), "12 bytes for shape \\[2, 2\\]"),
        (_array_value("FP32", [1], b"\0" * 8), "8 bytes for shape"),  # no silent prefix
        (_array_value("INT64", [-1], b""), "malformed n-d array"),
        (_array_value("FP32", ["x"], b""), "malformed n-d array"),
    ],
)
def test_malformed_values_raise_decode_error(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_envelope(value)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise_anything_but_decode_error(value: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_envelope(value)


def test_oip_json_request_and_response() -> None:
    body = {
        "id": "j1",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2]},
            {"name": "t", "datatype": "BYTES", "shape": [1], "data": ["hola"]},
        ],
    }
    env = decode_oip_json(json.dumps(body).encode(), None)
    assert env.request_id == "j1"
    assert env.fields["x"].dtype == np.float32
    assert env.fields["t"].tolist() == [b"hola"]
    out = json.loads(encode_oip_json_response(env.reply({}, "m", "1"), {"y": np.array([3.0])}))
    assert out == {
        "model_name": "m",
        "model_version": "1",
        "id": "j1",
        "outputs": [{"name": "y", "datatype": "FP64", "shape": [1], "data": [3.0]}],
    }


def test_oip_json_uses_key_when_no_id_and_rejects_bad_data() -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    assert decode_oip_json(json.dumps(body).encode(), "key-1").request_id == "key-1"
    bad = {"id": "a", "inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1]}]}
    with pytest.raises(DecodeError, match=r"1 elements in 'data' for shape \[3\]"):
        decode_oip_json(json.dumps(bad).encode(), None)
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_oip_json(b"{", None)


def test_served_by_round_trips_and_must_map_text_to_text() -> None:
    result = Envelope("r", {}, pipeline="docs", served_by={"ocr": "ocr:2", "langid": "langid:1"})
    assert decode_envelope(encode_envelope(result)).served_by == {
        "ocr": "ocr:2",
        "langid": "langid:1",
    }
    assert decode_envelope(encode_envelope(Envelope("r"))).served_by is None
    bad = msgpack.packb({"v": 1, "id": "r", "served_by": {"ocr": 2}})
    with pytest.raises(DecodeError, match="served_by"):
        decode_envelope(bad)


@pytest.mark.parametrize(("raw", "expected"), [(b"3", 3), (b"x", -1), (None, -1)])
def test_reply_partition_header(raw: bytes | None, expected: int) -> None:
    headers = [("reply-partition", raw)] if raw is not None else []
    assert parse_meta(headers).reply_partition == expected


def test_arrays_in_other_byte_orders_and_layouts_travel_little_endian_c_order() -> None:
    big = np.arange(6, dtype=">i4").reshape(2, 3)
    for array in (big, np.arange(6, dtype="<f8").reshape(2, 3).T):
        ext = msgpack.unpackb(encode_envelope(Envelope("r", {"a": array})), raw=False)["fields"]
        datatype, shape, data = msgpack.unpackb(ext["a"].data, raw=False)
        expected = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        assert (shape, data) == (list(array.shape), expected), datatype


def test_a_value_that_cannot_be_packed_leaves_the_encoder_usable() -> None:
    with pytest.raises(TypeError):
        encode_envelope(Envelope("r", {"x": object()}))
    assert decode_envelope(encode_envelope(Envelope("r", {"x": 1}))).fields == {"x": 1}


def test_meta_headers_are_case_insensitive_and_the_last_value_wins() -> None:
    headers = [("Reply-To", b"a"), ("attempt", b"1"), ("reply-to", b"b"), ("shadow", None)]
    meta = parse_meta(headers)
    assert (meta.reply_to, meta.attempt, meta.shadow) == ("b", 1, False)
    assert parse_meta(None) == parse_meta([("other", b"x")]) == parse_meta([])


@pytest.mark.parametrize(("raw", "expected"), [(b"1", True), (b"true", True), (b"0", False)])
def test_progress_header(raw: bytes, expected: bool) -> None:
    assert parse_meta([("progress", raw)]).progress is expected
    assert parse_meta([]).progress is False


def _oip_input(**tensor: object) -> bytes:
    return json.dumps({"id": "a", "inputs": [{"name": "t", **tensor}]}).encode()


@pytest.mark.parametrize(
    ("tensor", "reason"),
    [
        ({"datatype": "BYTES", "shape": [-3], "data": ["a", "b", "c"]}, "non-negative ints"),
        ({"datatype": "BYTES", "shape": [True], "data": ["a"]}, "non-negative ints"),
        ({"datatype": "BYTES", "shape": [1], "data": [123]}, "int element in BYTES data"),
        ({"datatype": "BYTES", "shape": [1], "data": [None]}, "NoneType element in BYTES"),
        ({"datatype": "BYTES", "shape": [1], "data": {}}, "'data' must be a list"),
        ({"datatype": "FP32", "shape": [1], "data": ["1"]}, "str element in FP32 data"),
        ({"datatype": "INT64", "shape": [1], "data": [1.5]}, "float element in INT64 data"),
        ({"datatype": "INT8", "shape": [1], "data": [1000]}, "does not fit INT8"),
        ({"datatype": "FP16", "shape": [1], "data": [1e300]}, "does not fit FP16"),
        ({"datatype": "BOOL", "shape": [1], "data": [1]}, "int element in BOOL data"),
        ({"datatype": "FP32", "shape": [2**40, 2**40], "data": [1.0]}, "1 elements in 'data'"),
    ],
)
def test_oip_json_refuses_data_that_does_not_fit_its_datatype_and_shape(
    tensor: dict[str, object], reason: str
) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_oip_json(_oip_input(**tensor), None)


def test_oip_json_reads_nested_data_row_major_and_refuses_repeated_inputs() -> None:
    env = decode_oip_json(_oip_input(datatype="INT64", shape=[2, 2], data=[[1, 2], [3, 4]]), None)
    assert env.fields["t"].tolist() == [[1, 2], [3, 4]]
    twice = {
        "id": "a",
        "inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["x"]}] * 2,
    }
    with pytest.raises(DecodeError, match="given twice"):
        decode_oip_json(json.dumps(twice).encode(), None)
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode_oip_json(b"[" * 100_000, None)


def _ext(datatype: object, shape: object, data: object) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb([datatype, shape, data]))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_ext("BYTES", [1], [None]), "BYTES elements must be text or bytes, got NoneType"),
        (_ext("BYTES", [1], [{"a": 1}]), "got dict"),
        (_ext("BYTES", [2], [b"a"]), "must be a list of 2 items"),
        (_ext("BYTES", [-1], [b"a"]), "non-negative ints"),
        (_ext("FP32", [2**40, 2**40], b"\0" * 4), "4 bytes for shape"),
        (_ext("FP32", [1], "four"), "a str for shape"),
        (_ext(7, [1], b"\0" * 4), "unknown datatype"),
    ],
)
def test_hostile_nd_arrays_are_decode_errors(value: msgpack.ExtType, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_envelope(msgpack.packb({"v": 1, "id": "r", "fields": {"t": value}}))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"v": 1, "id": "r", "fields": {b"t": "x"}}, "field names must be strings"),
        ({"v": 1, "id": "r" * 256, "fields": {}}, "request id is 256 characters"),
        ({"v": 1, "id": "r", "fields": {}, "caller": "c" * (1 << 20)}, "'caller' is 1048576"),
        ({"v": 1, "id": "r", "fields": {}, "deadline": True}, "'deadline' must be int"),
        ({"v": True, "id": "r", "fields": {}}, "unsupported envelope schema version True"),
        ({"v": 1, "id": "r", "fields": {}, "error": {"code": 1}}, "'error' must be a map"),
        ({"v": 1, "id": "r", "fields": {}, "error": "boom"}, "'error' must be a map"),
    ],
)
def test_envelope_heads_of_the_wrong_type_or_size_are_decode_errors(
    body: dict[object, object], reason: str
) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_envelope(msgpack.packb(body))


@pytest.mark.parametrize(
    "body",
    [
        '{"id": "\\ud800", "inputs": []}',
        '{"id": "r", "inputs": [{"name": "\\udfff", "datatype": "FP32", "shape": [0]}]}',
        '{"id": "r", "inputs": [], "parameters": {"caller": "a\\ud800b"}}',
    ],
)
def test_oip_json_refuses_lone_surrogates_in_names(body: str) -> None:
    with pytest.raises(DecodeError, match="lone surrogate"):
        decode_oip_json(body.encode(), None)


def test_an_output_that_is_no_tensor_is_a_model_error_in_json() -> None:
    env = Envelope("r1")
    with pytest.raises(ModelError, match="output 'y' is not a tensor"):
        encode_oip_json_response(env.reply({}, "m", "1"), {"y": [[1, 2], [3]]})
