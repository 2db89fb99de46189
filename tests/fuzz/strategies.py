"""Hypothesis strategies for hostile, structurally plausible messages of every entry point.

Mostly the right keys with the wrong types or values, so a case gets past the first check and
reaches the next one: msgpack envelopes whose ``fields`` hold n-d array extensions (ext type 1,
payload ``[datatype, shape, data]``) with hostile datatypes, shapes and data; OIP v2 JSON bodies
with negative shapes and mismatched data; Kafka headers with oversize and non-UTF-8 values;
protobuf requests. Every strategy draws bytes or messages ready for the checks of
:mod:`tests.fuzz.targets`; spec, control and audit documents are in :mod:`document_strategies`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
from hypothesis import strategies as st
from modelyard.api.oip.v2 import grpc_service_pb2 as oip
from modelyard.api.pipeline.v1 import pipeline_pb2 as ppb
from modelyard.errors import ModelyardError
from modelyard.tensors import DATATYPES
from modelyard.wire import decode_envelope
from modelyard.wire.headers import H

from tests.fuzz.framing import Message
from tests.fuzz.samples import FIELD_NAMES, STAGE_NAMES

__all__ = [
    "FLOATS",
    "GRPC_METADATA",
    "JUNK",
    "RESULT_FIELDS",
    "envelope_values",
    "field_values",
    "grpc_requests",
    "headers",
    "hostile",
    "infer_requests",
    "json_values",
    "jsonable",
    "kafka_messages",
    "rare",
    "reply_messages",
]

# what msgpack can carry: ints from -2**63 to 2**64 - 1
INT_EDGES = [0, 1, -1, 2, 3, 255, 256, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, -(2**63)]
WIRE_INTS = st.one_of(
    st.integers(-3, 5), st.sampled_from([*INT_EDGES, 2**64 - 1]), st.integers(-(2**63), 2**64 - 1)
)
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.5, math.nan, math.inf, -math.inf, 1e308, 5e-324, 65504.0]),
    st.floats(width=64),
)
TEXTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "en", "a", "text", "\x00", "é", "\u202e", "ø" * 300, "a" * 256]),
)
BINARY = st.one_of(st.binary(max_size=24), st.sampled_from([b"", b"\xff\xfe\xfd", b"\x00" * 8]))
SCALARS = st.one_of(st.none(), st.booleans(), WIRE_INTS, FLOATS, TEXTS, BINARY)
# msgpack's own extension -1, which its unpacker turns into a Timestamp before any ext hook
TIMESTAMPS = st.builds(msgpack.Timestamp, st.integers(-(2**34), 2**34), st.integers(0, 999_999_999))
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
    max_leaves=6,
)
DATATYPE_NAMES = st.one_of(
    st.sampled_from(sorted(DATATYPES)),
    st.sampled_from(["", "fp32", "FLOAT", "STRING", "BYTES\x00", "INT128", "OBJECT"]),
)
# the wire's named edge cases, drawn often: values the decoders were seen to crash on
NAMED_FIELD_VALUES = [
    [None], [{"a": 1}], [["x"]], {}, [], [1, "a"], [[1, 2], [3]], [b"x", None], [2**64 - 1],
    [math.nan], [True, 2], "", b"", [""], [[]], [[[1.5]]], [-(2**63)], [{}], [[None]],
]  # fmt: skip


def _shapes(large: bool) -> st.SearchStrategy[Any]:
    small = st.lists(st.integers(0, 3), max_size=3)
    if not large:
        return small
    odd = st.sampled_from(
        [[-1], [-3], [1, -1], [0, 2**62, 2**62], [2**63 - 1], [2**40], [1] * 70, [0] * 65, [2, 2]]
    )
    return st.one_of(small, small, odd, st.lists(WIRE_INTS, max_size=4), JUNK)


@st.composite
def ndarray_ext(draw: st.DrawFn) -> msgpack.ExtType:
    """An n-d array extension: exact three times in four, else wrong in one place (datatype,
    shape, data, extension code or payload)."""
    datatype: Any = draw(st.sampled_from(sorted(DATATYPES)))
    shape: Any = draw(_shapes(large=False))
    broken = draw(st.sampled_from(["", "", "", "", "", "", "datatype", "shape", "data", "code"]))
    if broken == "datatype":
        datatype = draw(st.one_of(DATATYPE_NAMES, SCALARS))
    if broken == "shape":
        shape = draw(_shapes(large=True))
    count = math.prod(shape) if _is_small_shape(shape) else 1
    data: Any
    if datatype == "BYTES":
        item = st.one_of(BINARY, BINARY, TEXTS) if broken != "data" else st.one_of(st.none(), JUNK)
        data = draw(st.lists(item, min_size=count, max_size=count))
        if broken == "data" and draw(st.booleans()):
            data = draw(st.lists(BINARY, max_size=count + 2) | JUNK)  # another count, or none
    else:
        width = DATATYPES[datatype].itemsize if datatype in DATATYPES else 1
        size = count * width
        if broken == "data":
            size = draw(st.sampled_from([size + 1, max(size - 1, 0), 0, size * 2]))
        data = draw(st.binary(min_size=size, max_size=size))
        if broken == "data" and draw(st.booleans()):
            data = draw(JUNK)
    code = draw(st.sampled_from([2, 0, 127])) if broken == "code" else 1
    payload = _pack([datatype, shape, data])
    if broken == "code" and draw(st.booleans()):  # the right code, a payload of anything else
        code, payload = 1, draw(st.binary(max_size=12) | st.just(_pack([datatype, shape])))
    return msgpack.ExtType(code, payload)


def _is_small_shape(shape: Any) -> bool:
    return (
        isinstance(shape, list)
        and all(type(d) is int and 0 <= d <= 64 for d in shape)
        and math.prod(shape) <= 64
    )


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


FIELD_LEAVES = st.one_of(SCALARS, ndarray_ext(), st.sampled_from(NAMED_FIELD_VALUES), TIMESTAMPS)
field_values = st.recursive(
    FIELD_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXTS, inner, max_size=2),
    max_leaves=8,
)
# values a request field is meant to hold: text lists and numeric matrices, for the happy path
PLAUSIBLE_VALUES = st.one_of(
    st.lists(TEXTS | BINARY, min_size=1, max_size=3),
    TEXTS,
    st.lists(st.lists(FLOATS, min_size=3, max_size=3), min_size=1, max_size=2),
    st.lists(WIRE_INTS, min_size=2, max_size=2),
    st.lists(st.booleans(), min_size=1, max_size=1),
)
FIELD_KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.sampled_from(FIELD_NAMES), TEXTS)


def rare(draw: st.DrawFn, n: int) -> bool:
    """True once in ``n`` draws; False is the simplest choice, so shrinking and Hypothesis's
    early, simplest examples take the plausible path."""
    return draw(st.integers(0, n - 1)) == n - 1


def hostile(draw: st.DrawFn, kinds: int, one_in: int) -> int:
    """-1 (plausible) most of the time, else one of ``kinds`` hostile variants, each once in
    ``one_in`` draws."""
    roll = draw(st.integers(0, one_in - 1)) - (one_in - kinds)
    return roll if roll >= 0 else -1


def _maybe(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """A good value four times in five, else a wrong one; ``_ABSENT`` leaves the key out."""
    kind = hostile(draw, 4, 20)
    if kind == -1:
        return draw(good)
    return _ABSENT if kind == 3 else draw(bad)


_ABSENT = object()
IDS = st.one_of(st.sampled_from(["req-1", "r", "a" * 255, "x y", "é"]), st.text(min_size=1))
BAD_IDS = st.one_of(st.sampled_from(["", "a" * 256]), JUNK)
DEADLINES = st.one_of(  # absurd, but ints: the router and the batcher must cope
    st.sampled_from([0, -1, 1, 2**31, 2**62, 2**63 - 1, -(2**63), 2**64 - 1, 4102444800000]),
    WIRE_INTS,
)


@st.composite
def envelope_maps(draw: st.DrawFn, *, reply: bool = False) -> dict[Any, Any]:
    """An envelope map: the right keys, each with a good value most of the time."""
    values = st.one_of(field_values, PLAUSIBLE_VALUES)
    fields = st.dictionaries(FIELD_KEYS, values, max_size=4)
    if reply:  # the outputs the fuzz pipeline reads: y (conditions, results), z, w
        outputs = st.fixed_dictionaries({}, optional={"y": values, "z": values, "w": values})
        fields = st.tuples(outputs, fields).map(lambda pair: {**pair[1], **pair[0]})
    bad_fields = st.one_of(JUNK, st.dictionaries(WIRE_INTS | BINARY, SCALARS, max_size=2))
    body: dict[Any, Any] = {}
    spec: list[tuple[str, st.SearchStrategy[Any], st.SearchStrategy[Any]]] = [
        ("v", st.just(1), st.sampled_from([0, 2, "1", True, 1.0, None, -1])),
        ("id", IDS, BAD_IDS),
        ("fields", fields, bad_fields),
        ("pipeline", st.sampled_from(["fz", "docs", "other"]), JUNK),
        ("stage", st.sampled_from([*STAGE_NAMES, "a", "a"]), JUNK | st.just("s" * 300)),
        ("caller", st.sampled_from(["alice", "", "c" * 1025]), JUNK),
        ("deadline", DEADLINES, FLOATS | TEXTS | JUNK),
    ]
    if reply:
        errors = st.fixed_dictionaries(
            {"code": st.sampled_from(["model", "validation", "x"]), "message": TEXTS},
            optional={"stage": st.none() | TEXTS},
        )
        spec += [
            ("model", st.sampled_from(["ma", "mb"]), JUNK),
            ("version", st.sampled_from(["1", "2"]), JUNK),
            ("error", st.none() | errors, JUNK),
            ("served_by", st.dictionaries(TEXTS, TEXTS, max_size=2), JUNK),
        ]
    for key, good, bad in spec:
        optional = key not in ("v", "id", "fields") and draw(st.booleans())
        value = _maybe(draw, good, bad)
        if value is not _ABSENT and not optional:
            body[key] = value
    if rare(draw, 10):
        body[draw(TEXTS | WIRE_INTS | BINARY)] = draw(JUNK)  # an unknown (or non-str) key
    return body


@st.composite
def envelope_values(draw: st.DrawFn, *, reply: bool = False) -> bytes:
    """Envelope bytes: mostly a packed map, sometimes broken on the byte level."""
    body = draw(envelope_maps(reply=reply))
    kind = hostile(draw, 5, 20)
    if kind == 0:
        return _pack(draw(JUNK))  # not a map
    if kind == 1:
        depth = draw(st.sampled_from([100, 600, 1000, 1100, 5000]))
        return _pack({"v": 1, "id": "deep", "fields": {"text": 0}})[:-1] + b"\x91" * depth + b"\xc0"
    packed = _pack(body)
    if kind == 2:
        return packed[: draw(st.integers(0, max(len(packed) - 1, 0)))]  # truncated
    if kind == 3:
        return packed + draw(st.binary(min_size=1, max_size=8))  # trailing bytes
    if kind == 4:
        return draw(st.binary(max_size=64))
    return packed


@st.composite
def json_tensors(draw: st.DrawFn) -> Any:
    """One OIP JSON input: name, datatype, shape and data, each sometimes wrong."""
    datatype = draw(DATATYPE_NAMES)
    shape = draw(_shapes(large=draw(st.booleans())))
    count = math.prod(shape) if _is_small_shape(shape) else 1
    element = st.one_of(
        TEXTS, st.integers(-(2**70), 2**70), FLOATS, st.booleans(), st.none(), st.just({})
    )
    good = {
        "BYTES": TEXTS,
        "BOOL": st.booleans(),
        "FP16": FLOATS,
        "FP32": FLOATS,
        "FP64": FLOATS,
    }.get(datatype, st.integers(-300, 70000))
    n = draw(st.sampled_from([count, count, count + 1, max(count - 1, 0)]))
    flat = draw(st.lists(st.one_of(good, good, good, element), min_size=n, max_size=n))
    data: Any = flat
    if draw(st.booleans()) and flat:
        data = [flat[: len(flat) // 2], flat[len(flat) // 2 :]]  # nested, maybe ragged
    tensor: dict[str, Any] = {}
    for key, good_value, bad in [
        ("name", st.sampled_from(FIELD_NAMES), JUNK | TEXTS | _SURROGATES),
        ("datatype", st.just(datatype), JUNK),
        ("shape", st.just(shape), JUNK | st.sampled_from([[-3], [1.5], ["1"], [True]])),
        ("data", st.just(data), JUNK | st.sampled_from([[123], [["x"]], {}, [None], "x"])),
    ]:
        value = _maybe(draw, good_value, bad)
        if value is not _ABSENT:
            tensor[key] = value
    return draw(JUNK) if rare(draw, 20) else tensor


_SURROGATES = st.sampled_from(["\ud800", "a\udfff", "\udc80\udc80"])


@st.composite
def json_values(draw: st.DrawFn) -> bytes:
    """An OIP v2 JSON inference request, or something that only looks like one."""
    body: dict[str, Any] = {}
    ids = st.one_of(IDS, IDS, BAD_IDS, _SURROGATES)
    params = st.fixed_dictionaries({}, optional={"caller": st.one_of(TEXTS, _SURROGATES, JUNK)})
    for key, good, bad in [
        ("id", ids, JUNK),
        ("inputs", st.lists(json_tensors(), max_size=3), JUNK),
        ("parameters", params, JUNK),
        ("outputs", st.lists(st.fixed_dictionaries({"name": TEXTS}), max_size=2), JUNK),
    ]:
        value = _maybe(draw, good, bad)
        if value is not _ABSENT:
            body[key] = value
    kind = hostile(draw, 3, 20)
    if kind == 0:
        return b"[" * draw(st.sampled_from([100, 10_000, 100_000])) + b"]"
    if kind == 1:
        return draw(st.sampled_from([b"{}", b"null", b"\xff\xfe", b'{"inputs": [1e999]}', b""]))
    text = json.dumps(body if kind == -1 else draw(JUNK.map(jsonable)), default=repr)
    return text.encode("utf-8", "surrogatepass")


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


_HEADER_VALUES: dict[str, list[bytes]] = {
    H.CONTENT_TYPE: [
        b"application/json", b"application/json; charset=utf-8", b" Application/JSON ",
        b"application/vnd.modelyard.envelope+msgpack", b"text/plain", b"\xff\xfe", b"",
    ],
    H.REPLY_TO: [b"replies", b"yard.p.fz.out", b"bad topic!", b"r" * 250, b"\xff\xfe", b""],
    H.REPLY_PARTITION: [b"0", b"3", b"-1", b"999999999", b"1" * 40, b"\xd9\xa3", b"x"],
    H.ATTEMPT: [b"0", b"1", b"-1", b"99999999999", b"\xd9\xa3", b"1e3", b""],
    H.SHADOW: [b"1", b"true", b"YES", b"0", b"\xff"],
    H.PROGRESS: [b"1", b"0", b"\xff"],
    H.STAGE: [b"a", b"b", b"c", b"s" * 300, b"\xff", b""],
    H.TRACEPARENT: [
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        b"00-00000000000000000000000000000000-0000000000000000-00", b"00-zz-yy-01", b"-" * 5000,
    ],
}  # fmt: skip
_BIG_VALUE = b"\xff" * 70_000  # larger than any cache keeps, and not UTF-8


@st.composite
def headers(draw: st.DrawFn, *, content_type: bytes | None = None) -> list[tuple[str, Any]]:
    """Kafka headers: known names (any case) with plausible and hostile values, and others."""
    out: list[tuple[str, Any]] = []
    if content_type is not None:
        out.append((H.CONTENT_TYPE, content_type))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(sorted(_HEADER_VALUES)))
        name = draw(st.sampled_from([name, name, name.upper(), name.title()]))
        values = _HEADER_VALUES[name.lower()]
        value = draw(st.one_of(st.sampled_from(values), st.sampled_from(values), BINARY))
        out.append((name, value))
    if rare(draw, 10):
        out.append((draw(st.sampled_from([*_HEADER_VALUES, "x-other"])), _BIG_VALUE))
    if rare(draw, 10):
        out.append((draw(TEXTS), draw(st.none() | BINARY)))  # any name; a null value
    return out


KEYS = st.one_of(st.none(), st.sampled_from([b"req-1", b"k", b"\xff\xfe", b"k" * 256, b""]), BINARY)


@st.composite
def kafka_messages(draw: st.DrawFn) -> Message:
    """An ingress or intake message: envelope or OIP JSON value, with key and headers."""
    if rare(draw, 3):
        ct = draw(st.sampled_from(_HEADER_VALUES[H.CONTENT_TYPE][:3]))
        return Message(draw(KEYS), draw(json_values()), draw(headers(content_type=ct)))
    value = None if rare(draw, 20) else draw(envelope_values())  # None: a tombstone
    return Message(draw(KEYS), value, draw(headers()))


@st.composite
def reply_messages(draw: st.DrawFn) -> Message:
    """A message on the router's inbox: mostly a stage reply, sometimes anything."""
    hdrs = draw(headers())
    if draw(st.booleans()):
        hdrs.append((H.STAGE, draw(st.sampled_from([b"a", b"b", b"c"]))))
    if draw(st.booleans()):
        hdrs.append((H.ATTEMPT, b"0"))
    value = None if rare(draw, 20) else draw(envelope_values(reply=True))
    return Message(draw(KEYS), value, hdrs)


# protobuf ------------------------------------------------------------------------------
_INT32 = st.integers(-(2**31), 2**31 - 1)
_UINT32 = st.integers(0, 2**32 - 1)
_INT64 = st.integers(-(2**63), 2**63 - 1)
_UINT64 = st.integers(0, 2**64 - 1)
_PB_SHAPES = st.one_of(
    st.lists(st.integers(-1, 4), max_size=4),
    st.sampled_from([[0, 2**62, 2**62], [2**62, 2**62], [1] * 70, [-(2**63)], [2**63 - 1], []]),
)
_CONTENTS: dict[str, st.SearchStrategy[Any]] = {
    "bool_contents": st.booleans(),
    "int_contents": _INT32,
    "int64_contents": _INT64,
    "uint_contents": _UINT32,
    "uint64_contents": _UINT64,
    "fp32_contents": st.floats(width=32),
    "fp64_contents": FLOATS,
    "bytes_contents": BINARY,
}


@st.composite
def _contents(draw: st.DrawFn, shape: list[int]) -> dict[str, list[Any]]:
    count = math.prod(shape) if all(0 <= d <= 8 for d in shape) else 1
    out = {}
    for field in draw(st.lists(st.sampled_from(sorted(_CONTENTS)), max_size=2, unique=True)):
        n = draw(st.sampled_from([count, count, count + 1, 0]))
        out[field] = draw(st.lists(_CONTENTS[field], min_size=n, max_size=n))
    return out


@st.composite
def grpc_requests(draw: st.DrawFn) -> oip.ModelInferRequest:
    """An OIP v2 ModelInferRequest for the stage model ``fz``: hostile tensors and raw data."""
    request = oip.ModelInferRequest(
        model_name=draw(st.sampled_from(["fz", "fz", "other", ""])),
        model_version=draw(st.sampled_from(["", "1", "2"])),
        id=draw(st.one_of(TEXTS, st.just("i" * 5000))),
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        shape = draw(_PB_SHAPES)
        tensor = request.inputs.add(
            name=draw(FIELD_KEYS), datatype=draw(DATATYPE_NAMES), shape=shape
        )
        if rare(draw, 5):
            tensor.parameters["p"].int64_param = draw(_INT64)
        if raw:
            request.raw_input_contents.append(draw(_raw_data(tensor.datatype, shape)))
        for field, values in draw(_contents(shape)).items():
            getattr(tensor.contents, field).extend(values)
    if raw and rare(draw, 5):
        request.raw_input_contents.append(b"\x00")  # one raw entry too many
    for name in draw(st.lists(st.sampled_from(["out_text", "nope", ""]), max_size=2)):
        request.outputs.add(name=name)
    if draw(st.booleans()):
        request.parameters["caller"].string_param = draw(TEXTS)
    return request


@st.composite
def _raw_data(draw: st.DrawFn, datatype: str, shape: list[int]) -> bytes:
    count = math.prod(shape) if all(0 <= d <= 8 for d in shape) else 1
    if datatype == "BYTES":
        items = draw(st.lists(BINARY, min_size=count, max_size=count))
        raw = b"".join(len(i).to_bytes(4, "little") + i for i in items)
        cut = draw(st.sampled_from([0, 0, 0, 1, 3]))  # ends inside a prefix or an element
        return raw[: len(raw) - cut] if cut <= len(raw) else raw
    width = DATATYPES[datatype].itemsize if datatype in DATATYPES else 4
    size = draw(st.sampled_from([count * width, count * width, count * width + 1, 0]))
    return draw(st.binary(min_size=size, max_size=size))


@st.composite
def pipeline_tensors(draw: st.DrawFn) -> ppb.Tensor:
    datatype = draw(DATATYPE_NAMES)
    shape = draw(_PB_SHAPES)
    tensor = ppb.Tensor(name=draw(FIELD_KEYS), datatype=datatype, shape=shape)
    if datatype == "BYTES" or rare(draw, 6):
        count = math.prod(shape) if all(0 <= d <= 8 for d in shape) else 1
        n = draw(st.sampled_from([count, count, count + 1, 0]))
        tensor.bytes_contents.extend(draw(st.lists(BINARY, min_size=n, max_size=n)))
    if datatype != "BYTES" or rare(draw, 6):
        tensor.raw_contents = draw(_raw_data(datatype, shape))
    return tensor


@st.composite
def infer_requests(draw: st.DrawFn) -> ppb.InferRequest:
    """A PipelineService InferRequest: hostile id, pipeline, tensors and timeout."""
    return ppb.InferRequest(
        id=draw(st.one_of(st.just(""), IDS, st.just("i" * 300), st.just("tab\there"))),
        pipeline=draw(st.sampled_from(["fz", "fz", "", "no such", "p" * 300, "a.b"])),
        inputs=draw(st.lists(pipeline_tensors(), max_size=3)),
        timeout_ms=draw(st.sampled_from([0, 1, 30_000, 2**32 - 1]) | _UINT32),
    )


def _decoded_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as a decoded envelope holds them (n-d arrays as numpy), {} if they do not
    decode."""
    try:
        return dict(decode_envelope(_pack({"v": 1, "id": "x", "fields": fields})).fields)
    except ModelyardError:
        return {}


RESULT_FIELDS = st.dictionaries(FIELD_KEYS, field_values, max_size=2).map(_decoded_fields)
GRPC_METADATA = st.lists(
    st.one_of(
        st.tuples(st.just("authorization"), st.sampled_from(["Bearer tok", "Bearer x", "", "x"])),
        st.tuples(st.just("x-modelyard-caller"), st.sampled_from(["bob", "c" * 2000, ""])),
        st.tuples(st.just("traceparent"), st.sampled_from(["00-zz", "x" * 3000])),
        st.tuples(st.just("x-bin"), BINARY),
    ),
    max_size=3,
)
