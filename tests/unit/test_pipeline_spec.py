"""Pipeline specs: the reference pipeline, located errors, and the router's walk."""

from __future__ import annotations

from pathlib import Path

import pytest
from modelyard.errors import ConfigError
from modelyard.graph import PipelineSpec, Ref, SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "pipelines" / "docs.yaml"

SMALL = """\
pipeline: small
version: 1
inputs:
  text: {datatype: BYTES, shape: [1]}
stages:
  a:
    model: ma
    inputs: {x: request.text}
  b:
    model: mb
    inputs: {x: a.y}
    when: "a.y != 'skip'"
  c:
    model: mc
    inputs: {x: a.y}
  d:
    model: md
    inputs: {x: b.y, z: c.y}
  e:
    model: me
    inputs: {x: [b.y, a.y]}
outputs:
  first: [d.y, c.y]
"""


@pytest.fixture(scope="module")
def docs() -> PipelineSpec:
    return load_spec(DOCS)


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "docs.yaml")
    return info.value


def _docs_with(old: str, new: str) -> str:
    text = DOCS.read_text()
    assert old in text
    return text.replace(old, new, 1)


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_reference_pipeline_parses(docs: PipelineSpec) -> None:
    assert docs.pipeline == "docs"
    assert list(docs.stages) == ["ocr", "langid", "translate", "sentiment"]
    assert docs.topological_order() == ("ocr", "langid", "translate", "sentiment")
    sentiment = docs.stages["sentiment"]
    assert sentiment.inputs["text"].candidates == (
        Ref("translate", "translation"),
        Ref("ocr", "text"),
    )
    assert sentiment.waits_for == {"translate", "ocr", "langid"}
    assert docs.stages["translate"].when is not None
    assert {"text", "language", "translation_status", "sentiment"} <= set(docs.outputs)


def test_spec_round_trips_through_its_dump(docs: PipelineSpec) -> None:
    again = PipelineSpec.model_validate(docs.model_dump())
    assert again.stages == docs.stages  # (private file/line info is not part of the dump)
    assert again.model_dump() == docs.model_dump()


def test_unknown_stage_names_line_field_and_stages() -> None:
    text = _docs_with("language: langid.language}", "language: langd.language}")
    error = _error(text)
    assert error.line == _line(text, "langd.language")
    assert error.field_path == ("stages", "translate", "inputs", "language")
    assert str(error) == (
        f"docs.yaml:{error.line}: stages.translate.inputs.language: unknown stage 'langd' "
        "(stages: ocr, langid, translate, sentiment)"
    )


def test_unknown_candidate_in_a_list_points_at_the_item() -> None:
    error = _error(
        _docs_with("[translate.translation, ocr.text]", "[translate.translation, oc.text]")
    )
    assert error.field_path == ("stages", "sentiment", "inputs", "text", 1)
    assert "unknown stage 'oc'" in str(error)


def test_unknown_request_field_and_output_source() -> None:
    assert "unknown request field 'img' (inputs: image)" in str(
        _error(_docs_with("request.image", "request.img"))
    )
    error = _error(_docs_with("sentiment: sentiment.label", "sentiment: sentimnt.label"))
    assert error.field_path == ("outputs", "sentiment")


def test_cycle_is_reported_at_its_first_stage() -> None:
    text = _docs_with("inputs: {text: ocr.text}\n", "inputs: {text: sentiment.label}\n")
    error = _error(text)
    assert error.line == _line(text, "langid:")
    assert "cycle: langid -> sentiment -> langid" in str(error)


def test_bad_condition_syntax_names_line_and_column() -> None:
    text = _docs_with("when: \"langid.language != 'en'\"", 'when: "langid.language !="')
    error = _error(text)
    assert error.line == _line(text, "langid.language !=")
    assert error.field_path == ("stages", "translate", "when")
    assert "column 19: invalid syntax" in str(error)


def test_forbidden_condition_construct() -> None:
    error = _error(_docs_with("when: \"langid.language != 'en'\"", "when: \"__import__('os')\""))
    assert "call to '__import__' is not allowed" in str(error)


def test_condition_referencing_unknown_stage_or_request_field() -> None:
    error = _error(
        _docs_with("when: \"langid.language != 'en'\"", "when: \"lang.language != 'en'\"")
    )
    assert "unknown name 'lang'" in str(error)
    error = _error(_docs_with("when: \"langid.language != 'en'\"", "when: \"request.who != 'x'\""))
    assert "'request.who' is not a request field (request: image, caller, id)" in str(error)
    error = _error(_docs_with("when: \"langid.language != 'en'\"", 'when: "langid"'))
    assert "refer to a stage output as 'langid.<output>'" in str(error)


def test_duplicate_key_names_both_lines() -> None:
    text = _docs_with("    model: translate\n", "    model: translate\n    model: translate2\n")
    error = _error(text)
    first = _line(text, "model: translate")
    assert error.line == first + 1
    assert f"duplicate key 'model' (first at line {first})" in str(error)


def test_schema_errors_are_located() -> None:
    text = _docs_with("    model: langid\n", "    model: langid\n    timeout: 3\n")
    error = _error(text)
    assert error.line == _line(text, "timeout")
    assert error.field_path == ("stages", "langid", "timeout")
    assert "Extra inputs are not permitted" in str(error)
    assert "unknown datatype 'BYTE'" in str(_error(_docs_with("datatype: BYTES", "datatype: BYTE")))
    assert "not '<stage>.<output>'" in str(_error(_docs_with("text: ocr.text\n", "text: ocr\n")))


def test_invalid_yaml_and_reserved_names() -> None:
    assert "invalid YAML" in str(_error("pipeline: [x\n"))
    error = _error(_docs_with("  ocr:\n", "  request:\n"))
    assert "stage name 'request'" in str(error)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cannot read pipeline spec"):
        load_spec(tmp_path / "nope.yaml")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("pipeline: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_spec(path)


def test_walk_fan_out_and_join() -> None:
    spec = parse_spec(SMALL)
    assert spec.ready_stages(set(), set()).run == ("a",)
    after_a = spec.ready_stages({"a"}, set())
    assert after_a.run == ("b", "c")  # fan-out: both read a.y
    assert spec.ready_stages({"a", "c"}, set()).run == ("b",)  # d joins b and c: waits for b
    assert spec.ready_stages({"a", "b", "c"}, set()).run == ("d", "e")


def test_walk_skip_propagates_and_first_available_falls_back() -> None:
    spec = parse_spec(SMALL)
    frontier = spec.ready_stages({"a", "c"}, {"b"})
    assert frontier.skip == ("d",)  # d needs b.y: skipped without evaluating anything
    assert frontier.run == ("e",)  # e takes [b.y, a.y]: b skipped, so a.y
    assert spec.resolve(spec.stages["e"].inputs["x"], {"a", "c"}, {"b"}) == Ref("a", "y")
    assert spec.resolve(spec.stages["e"].inputs["x"], {"a", "b"}, set()) == Ref("b", "y")
    assert spec.resolve(spec.outputs["first"], {"a", "c", "e"}, {"b", "d"}) == Ref("c", "y")
    assert not spec.ready_stages({"a", "c", "e"}, {"b", "d"})


def test_first_available_waits_for_an_unsettled_candidate() -> None:
    spec = parse_spec(SMALL)
    assert "e" not in spec.ready_stages({"a"}, set()).run  # b may still run: e must wait
    assert spec.resolve(spec.stages["e"].inputs["x"], {"a"}, set()) is None


def test_reference_walk_english_and_german(docs: PipelineSpec) -> None:
    # English: translate's condition is false, so the router skips it; sentiment reads OCR text
    english = docs.ready_stages({"ocr", "langid"}, {"translate"})
    assert english.run == ("sentiment",)
    text = docs.stages["sentiment"].inputs["text"]
    assert docs.resolve(text, {"ocr", "langid"}, {"translate"}) == Ref("ocr", "text")
    # German: sentiment waits for translate (data and condition), then reads the translation
    assert docs.ready_stages({"ocr", "langid"}, set()).run == ("translate",)
    assert docs.resolve(text, {"ocr", "langid", "translate"}, set()) == Ref(
        "translate", "translation"
    )
    status = docs.outputs["translation_status"]
    assert docs.resolve(status, {"ocr", "langid", "sentiment"}, {"translate"}) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pipeline: \x00", "unacceptable character #x0000"),  # PyYAML's ReaderError
        ("pipeline: ok\nversion: \x07", "unacceptable character #x0007"),
        ("[" * 5000, "nested more than 64 levels deep"),  # RecursionError, slowly
        ("version: 2001-02-30", "day is out of range"),  # the constructor's ValueError
        ("version: " + "1" * 5000, "invalid YAML value"),  # int() refuses 5000 digits
        ("? {[a]: 1}\n: 1", "keys must be strings"),  # an unhashable key's ConstructorError
        ("a: !!python/object:os.system x", "could not determine a constructor"),
        ("a: &x [*x]", "an alias refers to a collection that contains it"),  # RecursionError
    ],
)
def test_hostile_yaml_is_a_spec_error(text: str, message: str) -> None:
    assert message in str(_error(text))


def test_aliases_that_expand_without_bound_are_refused() -> None:
    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefgh"[i]
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    error = _error("\n".join(levels))  # 10**8 values once expanded: refused at once
    assert "expands to more than 10000 values" in str(error)


def test_aliases_within_bounds_still_load() -> None:
    text = _docs_with("  ocr:\n    model: ocr\n", "  ocr:\n    model: &m ocr\n")
    text = text.replace("    model: langid\n", "    model: langid\n    description: *m\n", 1)
    assert parse_spec(text).stages["langid"].description == "ocr"


def test_a_request_field_shape_holds_sizes_or_minus_one() -> None:
    # shape [-2] loaded, then refused every request (and broke code that sized arrays by it)
    text = _docs_with(
        "image: {datatype: BYTES, shape: [1]}", "image: {datatype: BYTES, shape: [-2]}"
    )
    error = _error(text)
    assert "inputs.image.shape" in str(error)
    assert "dimensions are sizes, or -1 for any size" in str(error)
