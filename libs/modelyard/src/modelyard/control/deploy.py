"""Deploy-time checks of a change: the version exists, and the pipeline's tensor contract holds.

``check_change(spec, repository, routing, change)`` runs before a change naming a version
(rollout, canary, shadow, release rollback) is written: the version must exist in the model
repository, and the pipeline spec must satisfy its contract
(:func:`modelyard.router.require_contract`) with that version's manifest in every combination
the router could then take: each other stage at its active or canary version. A stage that has
no version yet is left out (problems of its own wiring are reported at its first rollout, when
the others have versions). Raises ``ConfigError`` (``ControlError``, ``ContractError``) with a
readable message.

``record_check(spec, repository)`` is the same check as a reader runs it on every record of the
pipeline (a router, so that a record written past the CLI is refused too: ``control/verify.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

from modelyard.control.changes import (
    CanaryChange,
    Change,
    ControlError,
    Reassert,
    ReleaseRollback,
    ReleaseSave,
    Rollout,
    ShadowChange,
)
from modelyard.control.routing import PipelineRouting, StageRouting
from modelyard.control.state import ControlRecord
from modelyard.control.verify import DeployCheck
from modelyard.graph.contract import ContractError, check_contract
from modelyard.graph.spec import PipelineSpec
from modelyard.repository.manifest import Manifest
from modelyard.repository.store import ModelRepository

__all__ = [
    "check_change",
    "check_routing",
    "check_versions",
    "record_check",
    "routed_versions",
]


def check_change(
    spec: PipelineSpec, repository: ModelRepository, routing: PipelineRouting, change: Change
) -> None:
    """Refuse ``change`` if it names a stage, version or release the contract cannot take."""
    if isinstance(change, ReleaseSave | Reassert):
        return
    if isinstance(change, ReleaseRollback):
        release = routing.releases.get(change.release)
        if release is not None:  # an unknown release is refused by the change itself
            check_versions(spec, repository, routing, dict(release.stages))
        return
    _known_stage(spec, change.stage)
    version = _named_version(change)
    if version is not None:
        check_versions(spec, repository, routing, {change.stage: version})


def check_versions(
    spec: PipelineSpec,
    repository: ModelRepository,
    routing: PipelineRouting,
    fixed: Mapping[str, str],
) -> None:
    """The contract with the stages in ``fixed`` at those versions, every other stage at each
    version it is routed to; ContractError listing every distinct problem."""
    manifests = _Manifests(spec, repository)
    for stage, version in fixed.items():
        _known_stage(spec, stage)
        manifests.get(stage, version)  # a missing version says so before any contract problem
    choices = {
        stage: [fixed[stage]] if stage in fixed else routed_versions(routing.stage(stage))
        for stage in spec.stages
    }
    unrouted = [stage for stage, versions in choices.items() if not versions]
    problems: dict[str, None] = {}  # ordered, without duplicates across combinations
    for combination in _combinations(choices):
        found = {s: manifests.get(s, v) for s, v in combination.items()}
        problems.update(dict.fromkeys(_relevant(check_contract(spec, found), unrouted)))
    if problems:
        raise ContractError(list(problems))


def check_routing(
    spec: PipelineSpec, repository: ModelRepository, routing: PipelineRouting
) -> None:
    """The whole routing as it stands (a router's start-up check): every primary combination,
    and each stage's shadow version beside the others' routed versions."""
    check_versions(spec, repository, routing, {})
    for stage, state in routing.stages.items():
        if state.shadow is not None and stage in spec.stages:
            check_versions(spec, repository, routing, {stage: state.shadow.version})


def routed_versions(stage: StageRouting) -> list[str]:
    """The versions a stage's primary path can take: active, then canary."""
    versions = [stage.active, stage.canary.version if stage.canary else None]
    return [v for v in versions if v is not None]


def _combinations(choices: Mapping[str, list[str]]) -> Iterator[dict[str, str]]:
    """Every way to pick one version per routed stage."""
    stages = [s for s, versions in choices.items() if versions]
    for picked in itertools.product(*(choices[s] for s in stages)):
        yield dict(zip(stages, picked, strict=True))


def _relevant(problems: list[str], unrouted: list[str]) -> Iterator[str]:
    """Problems that are not about a stage without a version (that one is not deployed yet)."""
    for problem in problems:
        if not any(_about(problem, stage) for stage in unrouted):
            yield problem


def _about(problem: str, stage: str) -> bool:
    # located messages read "<file>:<line>: stages.<stage>.<field>: <message>"
    return f": stages.{stage}." in problem or f"no manifest for stage {stage!r}" in problem


def _named_version(change: Change) -> str | None:
    if isinstance(change, Rollout | CanaryChange | ShadowChange):
        return change.version
    return None


def _known_stage(spec: PipelineSpec, stage: str) -> None:
    if stage not in spec.stages:
        known = ", ".join(spec.stages)
        raise ControlError(f"pipeline {spec.pipeline!r} has no stage {stage!r} (stages: {known})")


class _Manifests:
    """Manifests by (stage, version), read once."""

    def __init__(self, spec: PipelineSpec, repository: ModelRepository) -> None:
        self._spec, self._repository = spec, repository
        self._cache: dict[tuple[str, str], Manifest] = {}

    def get(self, stage: str, version: str) -> Manifest:
        key = (self._spec.stages[stage].model, version)
        if key not in self._cache:
            self._cache[key] = self._repository.manifest(f"{key[0]}:{version}")
        return self._cache[key]


def record_check(spec: PipelineSpec, repository: ModelRepository) -> DeployCheck:
    """A reader's deploy check of a record of ``spec``'s pipeline (see ``control/verify.py``):
    the change against the state it was built on when the reader holds that state, else the
    whole routing the record carries."""

    def check(head: PipelineRouting, record: ControlRecord, built_on_head: bool) -> None:
        if built_on_head:
            check_change(spec, repository, head, record.change)
        else:
            check_routing(spec, repository, record.state)

    return check
