"""Pipeline specs: the YAML that names a pipeline's stages, their wiring and its results.

The schema is documented in ``docs/pipeline-spec.md``. Build specs with
:func:`modelyard.graph.load.load_spec` / ``parse_spec``, which validate the wiring too; every
problem is a :class:`SpecError` that names the file, line and field path
(``docs.yaml:12: stages.translate.inputs.text: unknown stage 'langd' ...``).
"""

from __future__ import annotations

import re
from collections.abc import Set
from functools import cached_property
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    field_validator,
    model_serializer,
    model_validator,
)

from modelyard.errors import ConfigError
from modelyard.graph import graph
from modelyard.graph._yaml import FieldPath, LineMap
from modelyard.graph.expressions import Condition, ExpressionError, compile_condition
from modelyard.graph.graph import REQUEST
from modelyard.tensors import DATATYPES

__all__ = [
    "REQUEST",
    "REQUEST_METADATA",
    "AuditPolicy",
    "Capture",
    "DriftPolicy",
    "Monitored",
    "PipelineSpec",
    "Ref",
    "Source",
    "SpecError",
    "Stage",
    "TensorField",
    "format_path",
]

REQUEST_METADATA = ("caller", "id")  # readable in conditions as request.caller / request.id
NAME = r"^[a-z][a-z0-9_]*$"  # stage and pipeline names must be identifiers in conditions
_REF = re.compile(r"^([a-z][a-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")


class SpecError(ConfigError):
    """A pipeline spec is invalid; ``line`` and ``field_path`` point at the first problem."""

    def __init__(self, message: str, line: int | None, field_path: FieldPath, source: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {format_path(field_path) or '<top>'}: {message}")
        self.line = line
        self.field_path = field_path
        self.source = source


def format_path(path: FieldPath) -> str:
    """``("stages", "s", "inputs", 0)`` -> ``"stages.s.inputs[0]"``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Ref(NamedTuple):
    """One place a value comes from: ``<stage>.<output>`` or ``request.<field>``."""

    stage: str
    field: str

    def __str__(self) -> str:
        return f"{self.stage}.{self.field}"


def _parse_ref(text: Any) -> Ref:
    match = _REF.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not '<stage>.<output>' or 'request.<field>'")
    return Ref(match[1], match[2])


class Source(_Frozen):
    """Where a stage input or pipeline output comes from: the first available candidate.

    Written as one reference (``ocr.text``) or a list (``[translate.translation, ocr.text]``).
    A candidate is available when its stage ran; a skipped stage's candidates are passed over.
    """

    candidates: tuple[Ref, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return {"candidates": [_parse_ref(v) for v in value]}
        return value

    @model_serializer
    def _to_yaml(self) -> list[str]:
        return [str(ref) for ref in self.candidates]  # the YAML form, so dumps load back

    def __str__(self) -> str:
        return " | ".join(map(str, self.candidates))


def _condition(value: Any) -> Condition:
    if isinstance(value, Condition):
        return value
    if not isinstance(value, str):
        raise ValueError("a condition must be a string")
    try:
        return compile_condition(value)
    except ExpressionError as exc:
        raise ValueError(f"invalid condition {value!r}: {exc.message}") from None


ConditionField = Annotated[
    Condition, PlainValidator(_condition), PlainSerializer(lambda c: c.text, return_type=str)
]


class TensorField(_Frozen):
    """A request field the pipeline accepts (same vocabulary as a manifest's TensorSpec)."""

    datatype: str = Field(description="OIP datatype: BYTES, FP32, INT64, ...")
    shape: tuple[int, ...] = Field(description="Dimensions; -1 marks a variable dimension.")
    optional: bool = Field(default=False, description="The request may omit it.")

    @field_validator("datatype")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"unknown datatype {value!r}; expected one of {sorted(DATATYPES)}")
        return value

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(dim < -1 for dim in value):  # no request could ever match such a field
            raise ValueError(f"shape {list(value)}: dimensions are sizes, or -1 for any size")
        return value


Monitored = Literal["categorical", "numeric", "length"]
_MONITORED = re.compile(r"^(input\.)?[A-Za-z_][A-Za-z0-9_]*$")


class Stage(_Frozen):
    """One stage: a model, where each of its inputs comes from, and when it runs."""

    model: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="Model name (no version).")
    inputs: dict[str, Source] = Field(min_length=1, description="Model input -> source.")
    when: ConditionField | None = Field(default=None, description="Run only if true.")
    description: str = ""
    monitor: dict[str, Monitored] = Field(
        default_factory=dict,
        description="Output (or 'input.<name>') -> how its values are watched for drift.",
    )

    @field_validator("monitor")
    @classmethod
    def _monitored_names(cls, value: dict[str, Monitored]) -> dict[str, Monitored]:
        for name in value:
            if not _MONITORED.match(name):
                raise ValueError(f"{name!r}: name an output, or a model input as 'input.<name>'")
        return value

    # cached: the router asks for every reply it routes, and a stage never changes
    @cached_property
    def upstream(self) -> frozenset[str]:
        """Stages this one reads data from (any candidate of any input)."""
        return frozenset(r.stage for s in self.inputs.values() for r in s.candidates) - {REQUEST}

    @cached_property
    def waits_for(self) -> frozenset[str]:
        """Stages that must settle first: data upstreams plus stages its condition reads."""
        named = {ref[0] for ref in self.when.references} if self.when else set()
        return self.upstream | (named - {REQUEST})


class AuditPolicy(_Frozen):
    """What a pipeline's audit records keep of its data (docs/pipeline-spec.md#audit). The
    final result is always kept (redacted, up to ``max_bytes``); stage inputs and outputs only
    with ``payloads: full``; every payload's digest always."""

    payloads: Literal["digest", "full"] = Field(
        default="digest", description="Keep stage inputs and outputs in full, or digests only."
    )
    redact: tuple[Ref, ...] = Field(
        default=(), description="Values never kept: 'request.<field>' or '<stage>.<output>'."
    )
    max_bytes: int = Field(
        default=65536, ge=0, description="A payload packed larger than this keeps its digest only."
    )

    @field_validator("redact", mode="before")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        return [_parse_ref(v) for v in value] if isinstance(value, list) else value


class DriftPolicy(_Frozen):
    """When a window's monitored values count as drifted from their reference
    (docs/monitor.md#drift): PSI above ``psi`` or a test's p-value below ``p_value``, judged
    only with at least ``min_samples`` values on both sides."""

    psi: float = Field(default=0.25, gt=0, description="Population stability index bound.")
    p_value: float = Field(default=0.001, gt=0, lt=1, description="chi-squared / KS p bound.")
    min_samples: int = Field(default=100, ge=2, description="No verdict on fewer values.")
    bins: int = Field(default=10, ge=2, le=100, description="Quantile bins of numeric PSI.")


class Capture(NamedTuple):
    """The audit policy worked out per place a value is recorded: the field names redacted in
    each stage's input and output and in the result (a value is redacted wherever it flows)."""

    full: bool
    max_bytes: int
    inputs: dict[str, frozenset[str]]
    outputs: dict[str, frozenset[str]]
    result: frozenset[str]


class PipelineSpec(_Frozen):
    """A whole pipeline; build it with ``load_spec``/``parse_spec`` to get it validated."""

    pipeline: str = Field(pattern=NAME, description="Pipeline name (topics, control keys).")
    version: int = Field(ge=1, description="Spec revision, for audit records.")
    description: str = ""
    inputs: dict[str, TensorField] = Field(min_length=1, description="Accepted request fields.")
    stages: dict[str, Stage] = Field(min_length=1, description="Stages, by name.")
    outputs: dict[str, Source] = Field(min_length=1, description="Result field -> source.")
    audit: AuditPolicy = Field(default_factory=AuditPolicy, description="Data capture policy.")
    drift: DriftPolicy = Field(default_factory=DriftPolicy, description="Drift thresholds.")
    _source: str = PrivateAttr(default="<spec>")
    _lines: LineMap = PrivateAttr(default_factory=dict)

    def locate(self, source: str, lines: LineMap) -> PipelineSpec:
        """Attach the file name and key lines (the loader does this once, before validating)."""
        self._source, self._lines = source, lines  # private attrs: the fields stay frozen
        return self

    @property
    def source(self) -> str:
        """The file name errors are reported against."""
        return self._source

    def line_of(self, path: FieldPath) -> int | None:
        """The line of ``path``'s key, or of its nearest enclosing key that has one."""
        for end in range(len(path), -1, -1):
            if path[:end] in self._lines:
                return self._lines[path[:end]]
        return None

    def error(self, message: str, path: FieldPath) -> SpecError:
        """A SpecError at ``path`` of this spec's file."""
        return SpecError(message, self.line_of(path), path, self._source)

    def topological_order(self) -> tuple[str, ...]:
        """Stages, each after everything it waits for (ties in declaration order)."""
        return graph.topological_order(self.stages)

    def ready_stages(self, done: Set[str], skipped: Set[str]) -> graph.Frontier:
        """What the router does next, given the stages that ran and the ones skipped."""
        step = self.moves.step(frozenset(done), frozenset(skipped))
        return graph.Frontier(step.run, step.skip)

    @cached_property
    def moves(self) -> graph.Moves:
        """``ready_stages`` and ``resolve`` worked out once per state (the flow asks these on
        every request); a spec never changes."""
        return graph.Moves(self.stages, self.outputs)

    def resolve(self, source: Source, done: Set[str], skipped: Set[str]) -> Ref | None:
        """The candidate that feeds ``source`` now (None: all skipped, or not settled yet)."""
        return graph.resolve(source, done, skipped)

    @cached_property
    def capture(self) -> Capture:
        """The audit policy per stage input, stage output and result field."""
        hidden = set(self.audit.redact)

        def fed(sources: dict[str, Source]) -> frozenset[str]:
            return frozenset(n for n, s in sources.items() if hidden.intersection(s.candidates))

        outputs: dict[str, set[str]] = {name: set() for name in self.stages}
        for ref in hidden:
            if ref.stage in outputs:
                outputs[ref.stage].add(ref.field)
        return Capture(
            full=self.audit.payloads == "full",
            max_bytes=self.audit.max_bytes,
            inputs={name: fed(stage.inputs) for name, stage in self.stages.items()},
            outputs={name: frozenset(fields) for name, fields in outputs.items()},
            result=fed(self.outputs),
        )
