"""Routing state as data: what the router should send where, per pipeline and stage.

Everything here is a frozen pydantic model that serialises to readable JSON. Nothing here
changes state; :mod:`modelyard.control.changes` computes the next state from the current one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_PREVIOUS",
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


class GuardRule(_Frozen):
    """A bound on a canary's health over a window; crossing it rolls the canary back."""

    metric: Literal["error_rate", "p99_latency_ms", "shadow_disagreement"]
    max: float = Field(ge=0, description="The bound; crossing it trips the rule.")
    window_s: float = Field(default=60.0, gt=0, description="Window the metric is computed on.")
    min_requests: int = Field(default=50, ge=1, description="No verdict on fewer requests.")


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
