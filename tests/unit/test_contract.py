"""Deploy-time contract: the spec's wiring against the manifests of the models it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from modelyard.graph import ContractError, PipelineSpec, check_contract, load_spec, parse_spec
from modelyard.graph.contract import require_contract, shapes_compatible
from modelyard.repository.manifest import Manifest
from modelyard.tensors import TensorSpec

DOCS = Path(__file__).resolve().parents[2] / "pipelines" / "docs.yaml"
Io = list[tuple[str, str, list[int]]]


def _manifest(name: str, inputs: Io, outputs: Io, **extra: Any) -> Manifest:
    def specs(items: Io) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(name=n, datatype=d, shape=tuple(s)) for n, d, s in items)

    return Manifest(
        name=name,
        version="1",
        runtime="python",
        inputs=specs(inputs),
        outputs=specs(outputs),
        **extra,
    )


def _reference(**overrides: Manifest) -> dict[str, Manifest]:
    manifests = {
        "ocr": _manifest(
            "ocr",
            [("image", "BYTES", [1])],
            [("text", "BYTES", [1]), ("confidence", "FP32", [1]), ("lines", "INT32", [1])],
        ),
        "langid": _manifest(
            "langid",
            [("text", "BYTES", [1])],
            [("language", "BYTES", [1]), ("probability", "FP32", [1])],
        ),
        "translate": _manifest(
            "translate",
            [("text", "BYTES", [-1]), ("language", "BYTES", [-1])],
            [("translation", "BYTES", [-1]), ("status", "BYTES", [-1]), ("route", "BYTES", [-1])],
        ),
        "sentiment": _manifest(
            "sentiment",
            [("text", "BYTES", [1])],
            [("label", "BYTES", [1]), ("scores", "FP32", [3])],
        ),
    }
    return {**manifests, **overrides}


@pytest.fixture(scope="module")
def docs() -> PipelineSpec:
    return load_spec(DOCS)


def _line(needle: str) -> int:
    return next(i for i, line in enumerate(DOCS.read_text().splitlines(), 1) if needle in line)


def test_reference_pipeline_matches_reference_models(docs: PipelineSpec) -> None:
    assert check_contract(docs, _reference()) == []
    require_contract(docs, _reference())


def test_manifests_may_be_keyed_by_model_name(docs: PipelineSpec) -> None:
    by_model = {m.name: m for m in _reference().values()}
    assert check_contract(docs, by_model) == []


def test_datatype_mismatch_names_stage_input_both_specs_and_line(docs: PipelineSpec) -> None:
    langid = _manifest("langid", [("text", "BYTES", [1])], [("language", "INT64", [1])])
    problems = check_contract(docs, _reference(langid=langid))
    line = _line("inputs: {text: ocr.text, language: langid.language}")
    assert (
        f"docs.yaml:{line}: stages.translate.inputs.language: input 'language' of translate:1 "
        "expects BYTES [-1] but langid.language is INT64 [1] (langid:1)"
    ) in problems
    assert len(problems) == 1  # the language output feeds nothing else typed


def test_missing_required_input(docs: PipelineSpec) -> None:
    sentiment = _manifest(
        "sentiment",
        [("text", "BYTES", [1]), ("domain", "BYTES", [1])],
        [("label", "BYTES", [1]), ("scores", "FP32", [3])],
    )
    [problem] = check_contract(docs, _reference(sentiment=sentiment))
    assert problem.startswith(f"docs.yaml:{_line('[translate.translation, ocr.text]')}: ")
    assert "stages.sentiment.inputs: required input 'domain' BYTES [1] of sentiment:1" in problem


def test_optional_input_may_be_left_unfed(docs: PipelineSpec) -> None:
    sentiment = _reference()["sentiment"]
    optional = TensorSpec(name="domain", datatype="BYTES", shape=(1,), optional=True)
    widened = sentiment.model_copy(update={"inputs": (*sentiment.inputs, optional)})
    assert check_contract(docs, _reference(sentiment=widened)) == []


def test_rank_mismatch(docs: PipelineSpec) -> None:
    langid = _manifest("langid", [("text", "BYTES", [1, -1])], [("language", "BYTES", [1])])
    problems = check_contract(docs, _reference(langid=langid))
    assert any(
        "stages.langid.inputs.text: input 'text' of langid:1 expects BYTES [1, -1] "
        "but ocr.text is BYTES [1] (ocr:1)" in p
        for p in problems
    )


def test_unknown_input_and_unknown_output(docs: PipelineSpec) -> None:
    translate = _manifest(
        "translate",
        [("source", "BYTES", [-1]), ("language", "BYTES", [-1])],
        [("translation", "BYTES", [-1]), ("status", "BYTES", [-1])],
    )
    problems = "\n".join(check_contract(docs, _reference(translate=translate)))
    assert "translate:1 has no input 'text' (inputs: source, language)" in problems
    assert "required input 'source' BYTES [-1] of translate:1 is not fed" in problems
    ocr = _manifest("ocr", [("image", "BYTES", [1])], [("txt", "BYTES", [1])])
    problems = "\n".join(check_contract(docs, _reference(ocr=ocr)))
    assert (
        "stages.langid.inputs.text: ocr.text: ocr:1 has no output 'text' (outputs: txt)" in problems
    )
    assert "outputs.text: ocr.text: ocr:1 has no output 'text'" in problems


def test_condition_reading_an_unknown_output(docs: PipelineSpec) -> None:
    langid = _manifest("langid", [("text", "BYTES", [1])], [("lang", "BYTES", [1])])
    problems = "\n".join(check_contract(docs, _reference(langid=langid)))
    assert "stages.translate.when: langid.language: langid:1 has no output 'language'" in problems


def test_missing_or_wrong_manifest(docs: PipelineSpec) -> None:
    manifests = _reference()
    del manifests["langid"]
    assert any("no manifest for stage 'langid'" in p for p in check_contract(docs, manifests))
    wrong = _reference(sentiment=_reference()["langid"])
    problems = check_contract(docs, wrong)
    assert any(
        "stage 'sentiment' runs model 'sentiment' but its manifest is langid:1" in p
        for p in problems
    )


def test_output_candidates_must_agree() -> None:
    spec = parse_spec(
        """\
pipeline: p
version: 1
inputs: {text: {datatype: BYTES, shape: [1]}}
stages:
  a: {model: a, inputs: {x: request.text}}
outputs:
  y: [a.y, request.text]
"""
    )
    a = _manifest("a", [("x", "BYTES", [1])], [("y", "FP32", [1])])
    [problem] = check_contract(spec, {"a": a})
    assert "outputs.y: candidates disagree: a.y is FP32 [1], request.text is BYTES [1]" in problem


def test_require_contract_lists_every_problem(docs: PipelineSpec) -> None:
    langid = _manifest("langid", [("text", "FP32", [1])], [("language", "FP32", [1])])
    with pytest.raises(ContractError) as info:
        require_contract(docs, _reference(langid=langid))
    assert len(info.value.problems) == 2  # langid's input, translate's language input


@pytest.mark.parametrize(
    ("a", "b", "ok"),
    [((1,), (1,), True), ((-1,), (3,), True), ((1,), (3,), False), ((1,), (1, 1), False),
     ((-1, 3), (2, -1), True), ((), (), True)],
)  # fmt: skip
def test_shapes_compatible(a: tuple[int, ...], b: tuple[int, ...], ok: bool) -> None:
    assert shapes_compatible(a, b) is ok
