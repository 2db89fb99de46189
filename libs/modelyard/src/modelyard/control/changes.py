"""Control-plane changes and the pure reducer that applies them.

``apply(state, change)`` returns the next :class:`PipelineRouting` or raises ``ControlError``
(a rollback with nothing to roll back to, a promote without a canary...). It never does I/O,
so the CLI, the router's guard and the tests share one definition of every change.

Semantics:

- ``rollout``: the version becomes active; the old active is pushed on the rollback stack.
- ``rollback``: the newest previous version becomes active again (canary and shadow kept,
  unless the canary is now the active version).
- ``canary``: set the canary (version + weight), or clear it with ``version: null``.
- ``promote``: the canary becomes active (old active pushed), the canary is cleared.
- ``shadow``: set the shadow (version + sample rate), or clear it with ``version: null``.
- ``guards``: replace the stage's guard rules.
- ``withdraw``: the version stops getting traffic of any kind: the canary and the shadow are
  cleared where they name it (a shadow-disagreement guard writes this; the active version
  cannot be withdrawn, roll back instead).
- ``release_save``: snapshot every stage's active version under a name.
- ``release_rollback``: make every stage of the snapshot active again, all at once; changed
  stages push their old active and lose their canary (the point is a known-good state),
  shadows are kept, stages not in the snapshot are untouched.
- ``reassert``: nothing changes but ``seq``. A writer whose record lost a race writes it so
  that the pipeline's last record is again one every reader applied (compaction keeps only
  the last record of each key; see ``control/chain.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelyard.control.routing import (
    MAX_PREVIOUS,
    VERSION,
    Canary,
    GuardRule,
    PipelineRouting,
    Release,
    Shadow,
    StageRouting,
)
from modelyard.errors import ConfigError

__all__ = [
    "CanaryChange",
    "Change",
    "ControlError",
    "GuardsChange",
    "Promote",
    "Reassert",
    "ReleaseRollback",
    "ReleaseSave",
    "Rollback",
    "Rollout",
    "ShadowChange",
    "Withdraw",
    "apply",
]

NAME = r"^[a-z][a-z0-9_]*$"
RELEASE = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"


class ControlError(ConfigError):
    """A change that makes no sense for the current state; nothing is written."""


class _Change(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Rollout(_Change):
    type: Literal["rollout"] = "rollout"
    stage: str = Field(pattern=NAME)
    version: str = Field(pattern=VERSION)


class Rollback(_Change):
    type: Literal["rollback"] = "rollback"
    stage: str = Field(pattern=NAME)


class CanaryChange(_Change):
    type: Literal["canary"] = "canary"
    stage: str = Field(pattern=NAME)
    version: str | None = Field(default=None, pattern=VERSION, description="None clears.")
    weight: float = Field(default=0.0, ge=0, le=1)


class Promote(_Change):
    type: Literal["promote"] = "promote"
    stage: str = Field(pattern=NAME)


class ShadowChange(_Change):
    type: Literal["shadow"] = "shadow"
    stage: str = Field(pattern=NAME)
    version: str | None = Field(default=None, pattern=VERSION, description="None clears.")
    sample_rate: float = Field(default=1.0, ge=0, le=1)


class GuardsChange(_Change):
    type: Literal["guards"] = "guards"
    stage: str = Field(pattern=NAME)
    rules: tuple[GuardRule, ...] = ()


class Withdraw(_Change):
    type: Literal["withdraw"] = "withdraw"
    stage: str = Field(pattern=NAME)
    version: str = Field(pattern=VERSION)


class ReleaseSave(_Change):
    type: Literal["release_save"] = "release_save"
    release: str = Field(pattern=RELEASE)


class ReleaseRollback(_Change):
    type: Literal["release_rollback"] = "release_rollback"
    release: str = Field(pattern=RELEASE)


class Reassert(_Change):
    type: Literal["reassert"] = "reassert"


Change = Annotated[
    Rollout
    | Rollback
    | CanaryChange
    | Promote
    | ShadowChange
    | GuardsChange
    | Withdraw
    | ReleaseSave
    | ReleaseRollback
    | Reassert,
    Field(discriminator="type"),
]


def apply(state: PipelineRouting, change: Change) -> PipelineRouting:
    """The state after ``change``; ControlError if it does not apply to ``state``."""
    if isinstance(change, ReleaseSave):
        return _save(state, change.release)
    if isinstance(change, ReleaseRollback):
        return _restore(state, change.release)
    if isinstance(change, Reassert):
        return state.model_copy(update={"seq": state.seq + 1})
    return _with_stage(state, change.stage, _stage_change(state.stage(change.stage), change))


def _stage_change(stage: StageRouting, change: Change) -> StageRouting:
    step = _STAGE_STEPS.get(type(change))
    if step is None:
        raise ControlError(f"not a stage change: {change.type}")
    return step(stage, change)


def _with_stage(state: PipelineRouting, name: str, stage: StageRouting) -> PipelineRouting:
    stages = {**state.stages, name: stage}
    return state.model_copy(update={"stages": stages, "seq": state.seq + 1})


def _activate(stage: StageRouting, version: str) -> StageRouting:
    """``version`` becomes active; the old active goes on the (bounded) rollback stack."""
    previous = stage.previous if stage.active is None else (*stage.previous, stage.active)
    canary = None if stage.canary and stage.canary.version == version else stage.canary
    update = {"active": version, "previous": previous[-MAX_PREVIOUS:], "canary": canary}
    return stage.model_copy(update=update)


def _rollout(stage: StageRouting, change: Rollout) -> StageRouting:
    if stage.active == change.version:
        raise ControlError(f"stage {change.stage!r}: version {change.version} is already active")
    return _activate(stage, change.version)


def _rollback(stage: StageRouting, change: Rollback) -> StageRouting:
    if not stage.previous:
        raise ControlError(f"stage {change.stage!r}: no previous version to roll back to")
    canary = None if stage.canary and stage.canary.version == stage.previous[-1] else stage.canary
    update = {"active": stage.previous[-1], "previous": stage.previous[:-1], "canary": canary}
    return stage.model_copy(update=update)


def _canary(stage: StageRouting, change: CanaryChange) -> StageRouting:
    if change.version is None:
        if stage.canary is None:
            raise ControlError(f"stage {change.stage!r}: no canary to clear")
        return stage.model_copy(update={"canary": None})
    if stage.active is None or stage.active == change.version:
        raise ControlError(f"stage {change.stage!r}: a canary needs a different active version")
    if change.weight <= 0:  # zero would be a canary nobody reaches: say "clear" instead
        raise ControlError(f"stage {change.stage!r}: weight must be in (0, 1]; clear with null")
    canary = Canary(version=change.version, weight=change.weight)
    return stage.model_copy(update={"canary": canary})


def _promote(stage: StageRouting, change: Promote) -> StageRouting:
    if stage.canary is None:
        raise ControlError(f"stage {change.stage!r}: no canary to promote")
    return _activate(stage, stage.canary.version)


def _shadow(stage: StageRouting, change: ShadowChange) -> StageRouting:
    if change.version is None:
        return stage.model_copy(update={"shadow": None})
    if change.version == stage.active:
        raise ControlError(f"stage {change.stage!r}: cannot shadow the active version")
    shadow = Shadow(version=change.version, sample_rate=change.sample_rate)
    return stage.model_copy(update={"shadow": shadow})


def _guards(stage: StageRouting, change: GuardsChange) -> StageRouting:
    return stage.model_copy(update={"guards": change.rules})


def _withdraw(stage: StageRouting, change: Withdraw) -> StageRouting:
    canary = stage.canary if stage.canary and stage.canary.version != change.version else None
    shadow = stage.shadow if stage.shadow and stage.shadow.version != change.version else None
    if canary == stage.canary and shadow == stage.shadow:
        raise ControlError(
            f"stage {change.stage!r}: version {change.version} is neither canary nor shadow"
        )
    return stage.model_copy(update={"canary": canary, "shadow": shadow})


# each stage change and the step that applies it (the type decides; mypy cannot see the pairing)
_STAGE_STEPS: dict[type[_Change], Callable[[StageRouting, Any], StageRouting]] = {
    Rollout: _rollout,
    Rollback: _rollback,
    CanaryChange: _canary,
    Promote: _promote,
    ShadowChange: _shadow,
    GuardsChange: _guards,
    Withdraw: _withdraw,
}


def _save(state: PipelineRouting, name: str) -> PipelineRouting:
    snapshot = {s: r.active for s, r in state.stages.items() if r.active is not None}
    if not snapshot:
        raise ControlError(f"pipeline {state.pipeline!r}: no active versions to save")
    releases = {**state.releases, name: Release(name=name, stages=snapshot)}
    return state.model_copy(update={"releases": releases, "seq": state.seq + 1})


def _restore(state: PipelineRouting, name: str) -> PipelineRouting:
    release = state.releases.get(name)
    if release is None:
        known = ", ".join(state.releases) or "none"
        raise ControlError(f"pipeline {state.pipeline!r}: no release {name!r} (releases: {known})")
    stages = dict(state.stages)
    for stage, version in release.stages.items():
        current = state.stage(stage)
        if current.active != version:
            stages[stage] = _activate(current, version).model_copy(update={"canary": None})
    return state.model_copy(update={"stages": stages, "seq": state.seq + 1})
