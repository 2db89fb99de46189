"""Loading a pipeline spec: YAML with key lines, the schema, then the wiring checks.

The wiring checks are those that need the whole spec: every source names a declared request
field or a known stage, conditions read only known names, and the stages form no cycle. What a
stage's *model* accepts is checked later against manifests (:mod:`modelyard.graph.contract`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError as PydanticValidationError

from modelyard.errors import ConfigError
from modelyard.graph._yaml import FieldPath, LineMap, YamlError, load_with_lines
from modelyard.graph.graph import REQUEST, find_cycle
from modelyard.graph.spec import NAME, REQUEST_METADATA, PipelineSpec, Source, SpecError

__all__ = ["load_spec", "parse_spec", "validate_spec"]

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Problem = tuple[FieldPath, str]


def parse_spec(text: str, source: str = "<spec>") -> PipelineSpec:
    """Parse and validate spec ``text``; ``source`` names it in error messages."""
    try:
        data, lines = load_with_lines(text)
    except YamlError as exc:
        raise SpecError(exc.message, exc.line, exc.path, source) from None
    try:
        spec = PipelineSpec.model_validate(data)
    except PydanticValidationError as exc:
        raise _from_pydantic(exc, lines, source) from None
    validate_spec(spec.locate(source, lines))
    return spec


def load_spec(path: Path) -> PipelineSpec:
    """Read and validate the spec at ``path`` (errors name the file by its base name)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline spec {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"pipeline spec {path} is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    return parse_spec(text, source=Path(path).name)


def validate_spec(spec: PipelineSpec) -> None:
    """Raise SpecError for the first wiring problem (in line order), if any."""
    problems = [
        *_names(spec),
        *_sources(spec),
        *_redactions(spec),
        *_monitored(spec),
        *_conditions(spec),
        *_cycles(spec),
    ]
    if problems:
        path, message = min(problems, key=lambda p: spec.line_of(p[0]) or 0)
        raise spec.error(message, path)


def _from_pydantic(exc: PydanticValidationError, lines: LineMap, source: str) -> SpecError:
    first = exc.errors()[0]
    path: FieldPath = tuple(p for p in first["loc"] if p != "candidates")
    line = next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), None)
    message = str(first["msg"]).removeprefix("Value error, ")
    return SpecError(message, line, path, source)


def _names(spec: PipelineSpec) -> Iterator[Problem]:
    for name in spec.stages:
        if not re.match(NAME, name) or name == REQUEST:
            yield ("stages", name), f"stage name {name!r} must match {NAME} and not be {REQUEST!r}"
    for name in spec.inputs:
        if not _FIELD.match(name) or name in REQUEST_METADATA:
            reserved = ", ".join(REQUEST_METADATA)
            yield (
                ("inputs", name),
                f"request field {name!r}: not an identifier, or reserved ({reserved})",
            )


def _sources(spec: PipelineSpec) -> Iterator[Problem]:
    for stage_name, stage in spec.stages.items():
        for input_name, source in stage.inputs.items():
            yield from _source(spec, source, ("stages", stage_name, "inputs", input_name))
    for output, source in spec.outputs.items():
        yield from _source(spec, source, ("outputs", output))


def _source(spec: PipelineSpec, source: Source, path: FieldPath) -> Iterator[Problem]:
    many = len(source.candidates) > 1
    for i, ref in enumerate(source.candidates):
        where = (*path, i) if many else path
        if ref.stage == REQUEST and ref.field not in spec.inputs:
            yield where, f"unknown request field {ref.field!r} (inputs: {_list(spec.inputs)})"
        elif ref.stage != REQUEST and ref.stage not in spec.stages:
            yield where, f"unknown stage {ref.stage!r} (stages: {_list(spec.stages)})"


def _redactions(spec: PipelineSpec) -> Iterator[Problem]:
    for i, ref in enumerate(spec.audit.redact):
        if ref.stage == REQUEST and ref.field not in spec.inputs:
            yield ("audit", "redact", i), f"unknown request field {ref.field!r}"
        elif ref.stage != REQUEST and ref.stage not in spec.stages:
            yield ("audit", "redact", i), f"unknown stage {ref.stage!r}"


def _monitored(spec: PipelineSpec) -> Iterator[Problem]:
    for name, stage in spec.stages.items():
        for field in stage.monitor:
            inner = field.removeprefix("input.")
            if inner != field and inner not in stage.inputs:
                yield (
                    ("stages", name, "monitor", field),
                    f"{field!r}: the stage has no input {inner!r} (inputs: {_list(stage.inputs)})",
                )


def _conditions(spec: PipelineSpec) -> Iterator[Problem]:
    for name, stage in spec.stages.items():
        if stage.when is None:
            continue
        path = ("stages", name, "when")
        for ref in sorted(stage.when.references):
            message = _condition_ref(spec, ref)
            if message:
                yield path, f"condition {stage.when.text!r}: {message}"


def _condition_ref(spec: PipelineSpec, ref: tuple[str, ...]) -> str | None:
    dotted = ".".join(ref)
    if ref[0] == REQUEST:
        fields = [*spec.inputs, *REQUEST_METADATA]
        if len(ref) != 2 or ref[1] not in fields:
            return f"{dotted!r} is not a request field (request: {', '.join(fields)})"
    elif ref[0] not in spec.stages:
        return f"unknown name {ref[0]!r} (stages: {_list(spec.stages)}; or {REQUEST})"
    elif len(ref) != 2:
        return f"{dotted!r}: refer to a stage output as '{ref[0]}.<output>'"
    return None


def _cycles(spec: PipelineSpec) -> Iterator[Problem]:
    cycle = find_cycle(spec.stages)
    if cycle:
        yield ("stages", cycle[0]), f"cycle: {' -> '.join(cycle)} (each waits for the next)"


def _list(names: Iterable[str]) -> str:
    return ", ".join(names)
