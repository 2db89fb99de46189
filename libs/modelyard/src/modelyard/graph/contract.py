"""Deploy-time contract check: does each stage's model accept what the spec feeds it?

``check_contract(spec, manifests)`` compares the wiring with the manifests of the versions that
would serve it, so a mismatch fails at deploy time instead of as poison messages at run time.
``manifests`` maps a stage name (or, failing that, its model name) to a manifest. Rules:

- every input the spec feeds exists in the model's manifest, and every non-optional manifest
  input is fed;
- every candidate feeding an input has the same datatype and a compatible shape: equal rank,
  and each dimension equal or ``-1`` on either side;
- every ``<stage>.<output>`` read by a source or a condition exists in that stage's manifest,
  and ``request.<field>`` sources are declared in the spec (checked when the spec is loaded);
- the candidates of one pipeline output agree with each other.

Each problem reads ``docs.yaml:19: stages.translate.inputs.text: ...`` and names both specs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from modelyard.errors import ConfigError
from modelyard.graph._yaml import FieldPath
from modelyard.graph.graph import REQUEST
from modelyard.graph.spec import PipelineSpec, Ref, Source, TensorField
from modelyard.repository.manifest import Manifest
from modelyard.tensors import TensorSpec

__all__ = ["ContractError", "check_contract", "require_contract", "shapes_compatible"]

Problem = tuple[FieldPath, str]
_Field = TensorSpec | TensorField


class ContractError(ConfigError):
    """The pipeline's wiring does not match its models; ``problems`` lists every mismatch."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("pipeline contract violated:\n  " + "\n  ".join(problems))
        self.problems = problems


def shapes_compatible(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Equal rank, and each dimension equal or free (-1) on either side."""
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def check_contract(spec: PipelineSpec, manifests: Mapping[str, Manifest]) -> list[str]:
    """Every mismatch between ``spec`` and ``manifests``, as located messages ([] if none)."""
    found = {name: _manifest(manifests, name, spec) for name in spec.stages}
    problems = [*_missing(spec, found), *_inputs(spec, found), *_reads(spec, found)]
    problems += _outputs(spec, found)
    problems.sort(key=lambda p: spec.line_of(p[0]) or 0)
    return [str(spec.error(message, path)) for path, message in problems]


def require_contract(spec: PipelineSpec, manifests: Mapping[str, Manifest]) -> None:
    """Raise ContractError listing every mismatch, if there is any."""
    problems = check_contract(spec, manifests)
    if problems:
        raise ContractError(problems)


def _manifest(manifests: Mapping[str, Manifest], stage: str, spec: PipelineSpec) -> Manifest | None:
    return manifests.get(stage) or manifests.get(spec.stages[stage].model)


def _describe(field: _Field) -> str:
    return f"{field.datatype} {list(field.shape)}"


def _missing(spec: PipelineSpec, found: Mapping[str, Manifest | None]) -> Iterator[Problem]:
    for name, stage in spec.stages.items():
        manifest = found[name]
        if manifest is None:
            yield (
                ("stages", name, "model"),
                f"no manifest for stage {name!r} (model {stage.model!r})",
            )
        elif manifest.name != stage.model:
            yield (
                ("stages", name, "model"),
                (f"stage {name!r} runs model {stage.model!r} but its manifest is {manifest.ref}"),
            )


def _inputs(spec: PipelineSpec, found: Mapping[str, Manifest | None]) -> Iterator[Problem]:
    for name in spec.stages:
        manifest = found[name]
        if manifest is not None:
            yield from _fed(spec, found, name, manifest)
            yield from _unfed(spec, name, manifest)


def _fed(
    spec: PipelineSpec, found: Mapping[str, Manifest | None], name: str, manifest: Manifest
) -> Iterator[Problem]:
    """Each input the spec feeds must exist in the manifest and get the right type."""
    specs = {s.name: s for s in manifest.inputs}
    for input_name, source in spec.stages[name].inputs.items():
        path = ("stages", name, "inputs", input_name)
        want = specs.get(input_name)
        if want is None:
            known = ", ".join(specs)
            yield path, f"{manifest.ref} has no input {input_name!r} (inputs: {known})"
        else:
            yield from _feeds(spec, found, source, path, (want, manifest.ref))


def _unfed(spec: PipelineSpec, name: str, manifest: Manifest) -> Iterator[Problem]:
    """Each non-optional manifest input must be fed."""
    for want in manifest.inputs:
        if not want.optional and want.name not in spec.stages[name].inputs:
            message = f"required input {want.name!r} {_describe(want)} of {manifest.ref}"
            yield ("stages", name, "inputs"), f"{message} is not fed"


def _feeds(
    spec: PipelineSpec,
    found: Mapping[str, Manifest | None],
    source: Source,
    path: FieldPath,
    want: tuple[TensorSpec, str],
) -> Iterator[Problem]:
    field, ref_text = want
    many = len(source.candidates) > 1
    for i, ref in enumerate(source.candidates):
        got = _producer(spec, found, ref)
        if got is None or isinstance(got, str):
            continue  # unknown output: reported by _reads
        producer, where = got
        if producer.datatype != field.datatype or not shapes_compatible(
            field.shape, producer.shape
        ):
            yield (
                (*path, i) if many else path,
                (
                    f"input {field.name!r} of {ref_text} expects {_describe(field)} but {ref} is "
                    f"{_describe(producer)} ({where})"
                ),
            )


def _producer(
    spec: PipelineSpec, found: Mapping[str, Manifest | None], ref: Ref
) -> tuple[_Field, str] | str | None:
    """The spec of what ``ref`` names and where it is declared; a message if it does not exist."""
    if ref.stage == REQUEST:
        field = spec.inputs.get(ref.field)
        return (field, "request field") if field else None
    manifest = found.get(ref.stage)
    if manifest is None:
        return None  # no manifest: reported by _missing
    outputs = {o.name: o for o in manifest.outputs}
    if ref.field not in outputs:
        return f"{manifest.ref} has no output {ref.field!r} (outputs: {', '.join(outputs)})"
    return outputs[ref.field], manifest.ref


def _reads(spec: PipelineSpec, found: Mapping[str, Manifest | None]) -> Iterator[Problem]:
    """Every ``<stage>.<output>`` named by a source or a condition must exist."""
    for path, refs in _all_reads(spec):
        for ref in refs:
            got = _producer(spec, found, ref)
            if isinstance(got, str):
                yield path, f"{ref}: {got}"


def _all_reads(spec: PipelineSpec) -> Iterator[tuple[FieldPath, list[Ref]]]:
    for name, stage in spec.stages.items():
        for input_name, source in stage.inputs.items():
            yield ("stages", name, "inputs", input_name), list(source.candidates)
        if stage.when is not None:
            refs = [Ref(r[0], r[1]) for r in sorted(stage.when.references) if len(r) == 2]
            yield ("stages", name, "when"), refs
    for output, source in spec.outputs.items():
        yield ("outputs", output), list(source.candidates)


def _outputs(spec: PipelineSpec, found: Mapping[str, Manifest | None]) -> Iterator[Problem]:
    """The candidates of one result field must agree, so its type does not depend on the path."""
    for output, source in spec.outputs.items():
        produced = [(ref, _producer(spec, found, ref)) for ref in source.candidates]
        typed = [(ref, got[0]) for ref, got in produced if isinstance(got, tuple)]
        for ref, field in typed[1:]:
            first_ref, first = typed[0]
            if field.datatype != first.datatype or not shapes_compatible(field.shape, first.shape):
                yield (
                    ("outputs", output),
                    (
                        f"candidates disagree: {first_ref} is {_describe(first)}, "
                        f"{ref} is {_describe(field)}"
                    ),
                )
