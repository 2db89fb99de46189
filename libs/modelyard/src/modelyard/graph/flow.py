"""One request's walk through a pipeline: pure state, no I/O.

The router service feeds a :class:`RequestFlow` the routing state and the stage replies it
receives; the flow answers with the :class:`Dispatch` es to send and, once every stage has
settled, the result. Versions are chosen when a stage is dispatched, so a rollback or a canary
change applies to the stages a request has not reached yet and never to a stage in flight.

A flow fails at the first stage error, condition error or missing active version; the result
then carries that error and the versions that served the stages that ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from modelyard.errors import UnavailableError
from modelyard.graph.expressions import EvaluationError
from modelyard.graph.graph import REQUEST
from modelyard.graph.spec import REQUEST_METADATA, PipelineSpec, Ref
from modelyard.tensors import TensorSpec
from modelyard.wire import Envelope, ErrorInfo

__all__ = ["Dispatch", "HopRole", "RequestFlow", "Route", "Routes", "request_specs"]

HopRole = Literal["active", "canary", "shadow"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request's input to a stage goes: the version that serves it, in which role,
    and the shadow version that gets a copy (None: no copy)."""

    version: str
    role: HopRole
    shadow: str | None = None


class Routes(Protocol):
    """The routing a flow is walked with (the control plane's state implements it)."""

    def route(self, pipeline: str, stage: str, *, sticky_key: str, request_id: str) -> Route:
        """The route of this request at this stage; UnavailableError when there is none."""
        ...


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~0.5 us more, per dispatch
class Dispatch:
    """One stage input to send to one model version (never changed once built)."""

    stage: str
    model: str
    version: str
    role: HopRole
    fields: Mapping[str, Any]
    attempt: int = 0

    @property
    def shadow(self) -> bool:
        return self.role == "shadow"

    @property
    def served_by(self) -> str:
        return f"{self.model}:{self.version}"


def request_specs(spec: PipelineSpec) -> list[TensorSpec]:
    """The pipeline's request fields as tensor specs, for validating ingress messages."""
    return [
        TensorSpec(name=n, datatype=f.datatype, shape=f.shape, optional=f.optional)
        for n, f in spec.inputs.items()
    ]


@dataclass
class RequestFlow:
    """The state of one request: which stages ran, were skipped, or are in flight."""

    spec: PipelineSpec
    request: Envelope
    sticky_key: str  # canary draws hash this: the caller, or the request id
    outputs: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)
    inflight: dict[str, Dispatch] = field(default_factory=dict)
    served_by: dict[str, str] = field(default_factory=dict)
    error: ErrorInfo | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def finished(self) -> bool:
        """True once the result can be emitted: failed, or nothing left to run or wait for."""
        return self.error is not None or (
            not self.inflight and len(self.outputs) + len(self.skipped) == len(self.spec.stages)
        )

    def advance(self, routing: Routes) -> list[Dispatch]:
        """Skip what must be skipped and dispatch what can run now (shadow copies included)."""
        out: list[Dispatch] = []
        moves = self.spec.moves  # each state's frontier is worked out once per spec
        while self.error is None:
            step = moves.step(frozenset(self.outputs), frozenset(self.skipped))
            ready = [s for s in step.run if s not in self.inflight]
            if not step.skip and not ready:
                break
            self.skipped.update(step.skip)
            for stage in ready:
                out.extend(self._start(stage, step.reads[stage], routing))
        return out

    def accept(self, stage: str, reply: Envelope, attempt: int) -> bool:
        """Take a primary reply; False for a duplicate, a stale attempt or an unknown stage."""
        sent = self.inflight.get(stage)
        if sent is None or sent.attempt != attempt or self.error is not None:
            return False
        del self.inflight[stage]
        if reply.error is not None:
            self.error = ErrorInfo(reply.error.code, reply.error.message, stage)
            return True
        self.outputs[stage] = reply.fields
        return True

    def fail(self, code: str, message: str, stage: str | None = None) -> None:
        """End the flow with an error (deadline, undeliverable dispatch); the first one wins."""
        if self.error is None:
            self.error = ErrorInfo(code, message, stage)

    def result(self) -> Envelope:
        """The final result: the pipeline's outputs (or the error) and who served each stage."""
        fields: dict[str, Any] = {}
        if self.error is None:
            done, skipped = frozenset(self.outputs), frozenset(self.skipped)
            for name, ref in self.spec.moves.outputs(done, skipped):
                value = self._read(ref)
                if value is not _MISSING:
                    fields[name] = value
        return Envelope(
            self.request_id,
            fields,
            pipeline=self.spec.pipeline,
            caller=self.request.caller,
            deadline_ms=self.request.deadline_ms,
            error=self.error,
            served_by=dict(self.served_by),
        )

    # internals ---------------------------------------------------------------------------
    def _start(
        self, stage: str, reads: tuple[tuple[str, Ref], ...], routing: Routes
    ) -> list[Dispatch]:
        definition = self.spec.stages[stage]
        try:
            if definition.when is not None and not definition.when.evaluate(self._context()):
                self.skipped.add(stage)
                return []
        except EvaluationError as exc:
            self.fail("condition", f"condition of stage {stage!r}: {exc}", stage)
            return []
        fields = {name: self._read(ref) for name, ref in reads}
        missing = [name for name, value in fields.items() if value is _MISSING]
        if missing:  # the deploy-time contract check makes this a version that broke its manifest
            missing.sort()
            self.fail("contract", f"stage {stage!r}: no value for input(s) {missing}", stage)
            return []
        try:
            route = routing.route(
                self.spec.pipeline, stage, sticky_key=self.sticky_key, request_id=self.request_id
            )
        except UnavailableError as exc:
            self.fail(exc.code, exc.message, stage)
            return []
        primary = Dispatch(stage, definition.model, route.version, route.role, fields)
        self.inflight[stage] = primary
        self.served_by[stage] = primary.served_by
        sends = [primary]
        if route.shadow is not None:
            sends.append(Dispatch(stage, definition.model, route.shadow, "shadow", fields))
        return sends

    def _context(self) -> dict[str, Any]:
        """What conditions read: the request (fields, caller, id) and every settled stage."""
        request: dict[str, Any] = dict(self.request.fields)
        request.update(zip(REQUEST_METADATA, (self.request.caller, self.request_id), strict=True))
        context: dict[str, Any] = {REQUEST: request}
        context.update(self.outputs)
        context.update(dict.fromkeys(self.skipped))  # a skipped stage reads as None
        return context

    def _read(self, ref: Ref | None) -> Any:
        if ref is None:
            return _MISSING
        values = self.request.fields if ref.stage == REQUEST else self.outputs[ref.stage]
        return values.get(ref.field, _MISSING)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
