"""Routing state as data: what the router should send where, per pipeline and stage.

Everything here is a frozen pydantic model that serialises to readable JSON. Nothing here
changes state; :mod:`modelyard.control.changes` computes the next state from the current one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

__all__ = [
    "MAX_PREVIOUS",
    "MONITOR_METRICS",
    "Canary",
    "GuardRule",
    "PipelineRouting",
    "Release",
    "Shadow",
    "StageRouting",
]

MAX_PREVIOUS = 10  # rollback depth kept per stage: bounds the size of every control record
VERSION = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"  # as a manifest version
# every version a record names is routed to (a topic name is made of it), so each is checked
Version = Annotated[str, Field(pattern=VERSION)]


class _Frozen(BaseModel):
    # allow_inf_nan: JSON readers take NaN and Infinity, but a record holding one could not be
    # written back (pydantic writes them as null), so no reader could take the next record
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Canary(_Frozen):
    """A version that gets a sticky share of a stage's traffic."""

    version: str = Field(pattern=VERSION)
    weight: float = Field(gt=0, le=1, description="Share of sticky keys sent to the canary.")


class Shadow(_Frozen):
    """A version that gets a copy of a sample of a stage's inputs; its replies go nowhere."""

    version: str = Field(pattern=VERSION)
    sample_rate: float = Field(gt=0, le=1, description="Share of requests mirrored.")


GuardMetric = Literal[
    "error_rate",  # the router: share of a canary's hops not ok
    "p99_latency_ms",  # the router: a canary's p99
    "shadow_disagreement",  # the shadow auditor: share of a shadow's runs that differ
    "p99_latency_ratio",  # the monitor: p99 over the active version's, same window
    "drift_psi",  # the monitor: largest PSI of a monitored field against its reference
    "drift_p_value",  # the monitor: smallest (Bonferroni-adjusted) test p-value, a min bound
    "shadow_agreement",  # the monitor: share of a shadow's compared runs that agree, a min bound
]
MONITOR_METRICS = frozenset({"p99_latency_ratio", "drift_psi", "drift_p_value", "shadow_agreement"})


class GuardRule(_Frozen):
    """A bound on a canary's or shadow's health over a window; crossing it takes the version's
    traffic away. One bound: ``max`` (crossed above) or ``min`` (crossed below)."""

    metric: GuardMetric
    max: float | None = Field(default=None, ge=0, description="Crossed above this.")
    min: float | None = Field(default=None, ge=0, description="Crossed below this.")
    window_s: float = Field(default=60.0, gt=0, description="Window the metric is computed on.")
    min_requests: int = Field(default=50, ge=1, description="No verdict on fewer requests.")

    @model_validator(mode="after")
    def _one_bound(self) -> Self:
        if (self.max is None) == (self.min is None):
            raise ValueError("a guard rule has one bound: max or min")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_bound(self, handler: SerializerFunctionWrapHandler) -> Any:
        # the bound not given is left out: records signed before `min` existed verify as signed
        data = handler(self)
        if isinstance(data, dict):
            for bound in ("max", "min"):
                if data.get(bound) is None:
                    data.pop(bound, None)
        return data

    def crossed(self, value: float) -> bool:
        """Whether ``value`` is past the bound."""
        return value > self.max if self.max is not None else value < (self.min or 0.0)

    @property
    def bound(self) -> str:
        """``> 0.2`` or ``< 0.9``."""
        return f"> {self.max:g}" if self.max is not None else f"< {self.min:g}"


class StageRouting(_Frozen):
    """The routing of one (pipeline, stage)."""

    active: Version | None = Field(default=None, description="Version serving the primary path.")
    previous: tuple[Version, ...] = Field(default=(), description="Rollback stack, newest last.")
    canary: Canary | None = None
    shadow: Shadow | None = None
    guards: tuple[GuardRule, ...] = ()


class Release(_Frozen):
    """A named snapshot of every stage's active version."""

    name: str
    stages: dict[str, Version] = Field(description="Stage -> active version when saved.")


class PipelineRouting(_Frozen):
    """The full routing state of one pipeline: what every control record carries."""

    pipeline: str
    seq: int = Field(default=0, ge=0, description="Number of changes applied so far.")
    stages: dict[str, StageRouting] = Field(default_factory=dict)
    releases: dict[str, Release] = Field(default_factory=dict)

    def stage(self, name: str) -> StageRouting:
        """The routing of stage ``name`` (empty if never set)."""
        found = self.stages.get(name)  # not get(name, default): that builds a model per call
        return found if found is not None else _NO_STAGE_ROUTING


_NO_STAGE_ROUTING = StageRouting()  # frozen: one shared "never set" value
