"""Every reference model version served by `modelyard serve`, over Kafka and over gRPC.

One stage process per version (a module-scoped fixture) answers both transports: valid requests
get the right content, bad ones are dead-lettered with their original bytes and an error reply
on Kafka, and the same bad model-level input is a readable gRPC status for a stock client.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
from modelyard.broker import create_topics
from modelyard.repository.manifest import Manifest, load_manifest
from modelyard.wire import Envelope, decode_envelope, encode_envelope
from modelyard.wire.headers import header_value
from modelyard_langid.samples import SENTENCES
from modelyard_ocr.corpus import CORPUS
from modelyard_ocr.metrics import cer
from modelyard_ocr.samples import render

from tests.support.kafka_io import Collector, produce_all
from tests.support.stage import running_stage

pytestmark = pytest.mark.integration

MAX_CER = 0.02  # clean rendered pages read at 0.0 % (docs/models/ocr.md); room for font builds
Fields = dict[str, Any]
Tensors = Mapping[str, np.ndarray[Any, Any]]


def text(*values: str | bytes) -> np.ndarray[Any, Any]:
    """A BYTES tensor of the given elements (str encoded as UTF-8)."""
    out = np.empty(len(values), dtype=object)
    out[:] = [v.encode() if isinstance(v, str) else v for v in values]
    return out


@dataclass(frozen=True)
class Bad:
    """A request that must fail: its error code on Kafka, its status on gRPC, a message part."""

    fields: Fields
    code: str
    grpc_status: str
    reason: str


@dataclass(frozen=True)
class Case:
    ref: str
    valid: dict[str, Fields]  # request id -> fields
    check: Callable[[str, Tensors], None]  # asserts the reply content for a valid request id
    bad: dict[str, Bad] = field(default_factory=dict)  # request id -> wrong input


def _check_ocr(rid: str, out: Tensors) -> None:
    assert cer([(out["text"][0].decode(), CORPUS[rid][0])]) <= MAX_CER, out["text"][0]
    assert out["lines"][0] >= 1
    assert 0.5 < out["confidence"][0] <= 1.0


def _check_langid(rid: str, out: Tensors) -> None:
    assert out["language"].tolist() == [rid.encode()]
    assert 0.5 < out["probability"][0] <= 1.0


def _check_sentiment(rid: str, out: Tensors) -> None:
    assert out["label"].tolist() == [rid.encode()]
    assert out["scores"].shape == (3,)


def _check_translate(rid: str, out: Tensors) -> None:
    if rid == "es":
        english = out["translation"][0].decode().lower()
        assert {"horrible", "restaurant", "slow"} <= set(english.replace(".", " ").split())
        assert (out["status"].tolist(), out["route"].tolist()) == ([b"translated"], [b"es>en"])
    else:  # German has no route: an empty answer that says so, never an error
        assert out["status"].tolist() == [b"unsupported"]
        assert (out["translation"].tolist(), out["route"].tolist()) == ([b""], [b""])


def _wrong_input(name: str) -> dict[str, Bad]:
    """A wrong dtype and an unknown field for a model whose input ``name`` is BYTES."""
    return {
        "wrong-dtype": Bad(
            {name: np.ones(1, np.float32)}, "validation", "INVALID_ARGUMENT", "BYTES"
        ),
        "unknown-field": Bad({"nope": text("x")}, "validation", "INVALID_ARGUMENT", "nope"),
    }


def _text_limits(limit: int) -> dict[str, Bad]:
    return {
        "too-long": Bad(
            {"text": text("a" * (limit + 1))},
            "too_large",
            "RESOURCE_EXHAUSTED",
            f"longer than {limit} characters",
        ),
        "not-utf8": Bad(
            {"text": text(b"\xff\xfe caf\xe9")}, "validation", "INVALID_ARGUMENT", "not UTF-8"
        ),
    }


def _ocr(version: str) -> Case:
    return Case(
        f"ocr:{version}",
        {lang: {"image": text(render(CORPUS[lang][0]))} for lang in ("en", "es")},
        _check_ocr,
        {
            **_wrong_input("image"),
            "not-an-image": Bad(
                {"image": text(b"GIF89a, or rather not an image at all")},
                "validation",
                "INVALID_ARGUMENT",
                "not an image",
            ),
        },
    )


def _langid(version: str) -> Case:
    return Case(
        f"langid:{version}",
        {lang: {"text": text(SENTENCES[lang][0])} for lang in ("en", "es")},
        _check_langid,
        {**_wrong_input("text"), **_text_limits(5000)},
    )


def _sentiment(version: str) -> Case:
    return Case(
        f"sentiment:{version}",
        {
            "negative": {
                "text": text("The service was terrible and the food horrible. I hate it.")
            },
            "positive": {
                "text": text("I love this phone, it is wonderful and the battery is great.")
            },
        },
        _check_sentiment,
        {**_wrong_input("text"), **_text_limits(5000)},
    )


def _translate() -> Case:
    sentence = "Este restaurante es horrible y el servicio fue muy lento."
    return Case(
        "translate:1",
        {
            "es": {"text": text(sentence), "language": text("es")},
            "de": {"text": text("Das Restaurant ist schrecklich."), "language": text("de")},
        },
        _check_translate,
        {
            **_wrong_input("text"),
            "too-long": Bad(
                {"text": text("a" * 20_001), "language": text("es")},
                "too_large",
                "RESOURCE_EXHAUSTED",
                "longer than 20000 characters",
            ),
            "not-utf8": Bad(
                {"text": text(b"caf\xe9 \xff"), "language": text("es")},
                "validation",
                "INVALID_ARGUMENT",
                "not valid UTF-8",
            ),
        },
    )


CASES = {
    c.ref: c
    for c in (
        _ocr("2"),
        _ocr("1"),
        _langid("1"),
        _translate(),
        _sentiment("2"),
        _sentiment("1"),
    )
}
GARBAGE = b"\xc1 neither msgpack nor JSON"


@dataclass(frozen=True)
class Served:
    case: Case
    manifest: Manifest
    grpc: str
    input: str
    out: str
    dlq: str


@pytest.fixture(scope="module", params=list(CASES))
def served(request: pytest.FixtureRequest, broker: str, reference_repo: Path) -> Iterator[Served]:
    """One `modelyard serve` process of the version, on fresh topics, for both transports."""
    case: Case = CASES[request.param]
    model, version = case.ref.split(":")
    name = f"ref-{model}-{version}-{uuid.uuid4().hex[:8]}"
    topics = (f"{name}.in", f"{name}.out", f"{name}.m.{model}.{version}.dlq")
    create_topics(broker, list(topics))
    args = ["--bootstrap", broker, "--input-topic", topics[0], "--group", f"{name}.g"]
    with running_stage(case.ref, reference_repo, *args, "--topic-prefix", name) as (_, ready):
        manifest = load_manifest(reference_repo / model / version)
        yield Served(case, manifest, ready["grpc"], *topics)


def _keys_seen(wanted: set[str]) -> Callable[[list[Any]], bool]:
    return lambda messages: wanted <= {m.key().decode() for m in messages}


def _collect(broker: str, topic: str, keys: set[str]) -> dict[str, Any]:
    """The messages of ``topic`` with these keys, by key, once all have arrived."""
    collector = Collector(broker, topic)
    try:
        messages = collector.until(_keys_seen(keys))
    finally:
        collector.close()
    return {m.key().decode(): m for m in messages if m.key().decode() in keys}


def _send(served: Served, broker: str, requests: dict[str, bytes]) -> dict[str, Envelope]:
    """Produce ``requests`` (id -> value) to the stage; its replies by id."""
    reply_to = [("reply-to", served.out.encode())]
    produce_all(broker, served.input, [(rid, v, reply_to) for rid, v in requests.items()])
    replies = _collect(broker, served.out, set(requests))
    return {rid: decode_envelope(m.value()) for rid, m in replies.items()}


def test_kafka_answers_valid_requests_and_dead_letters_bad_ones(
    served: Served, broker: str
) -> None:
    case = served.case
    requests = {rid: encode_envelope(Envelope(rid, f)) for rid, f in case.valid.items()}
    requests |= {rid: encode_envelope(Envelope(rid, b.fields)) for rid, b in case.bad.items()}
    requests["garbage"] = GARBAGE
    got = _send(served, broker, requests)
    letters = _collect(broker, served.dlq, set(requests) - set(case.valid))
    assert {rid: m.value() for rid, m in letters.items()} == {
        rid: v for rid, v in requests.items() if rid not in case.valid
    }  # original bytes, untouched
    dead = {rid: m.headers() for rid, m in letters.items()}
    for rid in case.valid:
        reply = got[rid]
        assert reply.error is None, reply.error
        assert (reply.model, reply.version) == tuple(case.ref.split(":"))
        assert set(reply.fields) == {o.name for o in served.manifest.outputs}
        case.check(rid, reply.fields)
    expected = {rid: (b.code, b.reason) for rid, b in case.bad.items()}
    expected["garbage"] = ("decode", "msgpack")
    for rid, (code, reason) in expected.items():
        assert header_value(dead[rid], "dlq-error-code") == code, rid
        assert reason in (header_value(dead[rid], "dlq-error") or ""), rid
        error = got[rid].error
        assert error is not None, rid
        assert (error.code, reason in error.message) == (code, True), error


def _grpc_inputs(fields: Fields) -> list[triton.InferInput]:
    inputs = []
    for name, array in fields.items():
        datatype = "BYTES" if array.dtype == object else "FP32"
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _same(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    if a.dtype == object:
        return bool(a.tolist() == b.tolist())
    return bool(np.allclose(a, b, rtol=1e-5, atol=1e-6))


def test_grpc_metadata_answers_and_statuses_match_kafka(served: Served, broker: str) -> None:
    manifest, case = served.manifest, served.case
    client = triton.InferenceServerClient(served.grpc)
    try:
        meta = client.get_model_metadata(manifest.name, manifest.version)
        kafka = _send(
            served,
            broker,
            {f"g-{rid}": encode_envelope(Envelope(f"g-{rid}", f)) for rid, f in case.valid.items()},
        )
        answers = {
            rid: client.infer(manifest.name, _grpc_inputs(f)) for rid, f in case.valid.items()
        }
        failures = {}
        for rid, bad in case.bad.items():
            with pytest.raises(triton.InferenceServerException) as caught:
                client.infer(manifest.name, _grpc_inputs(bad.fields))
            failures[rid] = caught.value
    finally:
        client.close()
    spec = [(t.name, t.datatype, list(t.shape)) for t in manifest.inputs]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == spec
    spec = [(t.name, t.datatype, list(t.shape)) for t in manifest.outputs]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == spec
    for rid, result in answers.items():
        outputs = {o.name: result.as_numpy(o.name) for o in manifest.outputs}
        case.check(rid, outputs)
        for name, value in kafka[f"g-{rid}"].fields.items():
            assert _same(outputs[name], value), (rid, name, outputs[name], value)
    for rid, error in failures.items():
        bad = case.bad[rid]
        assert error.status() == f"StatusCode.{bad.grpc_status}", (rid, str(error))
        assert bad.reason in (error.message() or ""), (rid, str(error))
