"""Deploy-time checks of a pipeline's routing against the model repository.

Every version the routing may send a stage's input to (active, canary, shadow) must exist and
keep the spec's tensor contract; checked when a router starts and before a change is written.
A stage with no active version yet (a pipeline being rolled out stage by stage) is checked
with the latest version in the repository standing in for it.
"""

from __future__ import annotations

from collections.abc import Iterator

from modelyard.control import PipelineRouting, StageRouting
from modelyard.errors import ConfigError
from modelyard.repository.manifest import Manifest
from modelyard.repository.store import ModelRepository
from modelyard.router.contract import require_contract
from modelyard.router.spec import PipelineSpec

__all__ = ["check_routing", "routed_versions"]


def routed_versions(stage: StageRouting) -> list[str]:
    """The versions a stage's requests may reach: active, canary, shadow (in that order)."""
    versions = [stage.active] if stage.active else []
    versions += [r.version for r in (stage.canary, stage.shadow) if r is not None]
    return versions


def check_routing(spec: PipelineSpec, routing: PipelineRouting, repo: ModelRepository) -> None:
    """ConfigError (ContractError for tensor mismatches) unless every routed version fits."""
    active: dict[str, Manifest] = {}
    for stage, versions in _versions(spec, routing):
        active[stage] = _manifest(repo, spec, stage, versions[0] if versions else None)
    require_contract(spec, active)
    for stage, versions in _versions(spec, routing):
        for version in versions[1:]:  # each alternative, beside the other stages' active ones
            require_contract(spec, {**active, stage: _manifest(repo, spec, stage, version)})


def _versions(spec: PipelineSpec, routing: PipelineRouting) -> Iterator[tuple[str, list[str]]]:
    for stage in spec.stages:
        yield stage, routed_versions(routing.stage(stage))


def _manifest(
    repo: ModelRepository, spec: PipelineSpec, stage: str, version: str | None
) -> Manifest:
    model = spec.stages[stage].model
    ref = f"{model}:{version}" if version else model  # a bare name: its latest version
    try:
        return repo.manifest(ref)
    except ConfigError as exc:
        raise ConfigError(f"stage {stage!r} routes to {ref}: {exc.message}") from None
