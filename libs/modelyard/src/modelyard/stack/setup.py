"""The one-off steps of bringing a stack up: topics, and the first routing of every pipeline."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from modelyard.broker import create_topics, ensure_pipeline_topics
from modelyard.control import Rollout
from modelyard.control.deploy import check_versions
from modelyard.control.topic import ensure_control_topic, read_state, write_change
from modelyard.control.verify import ControlVerifier
from modelyard.errors import ConfigError
from modelyard.graph.spec import PipelineSpec
from modelyard.keys import SigningKey
from modelyard.repository.store import ModelRepository
from modelyard.stack.plan import initial_versions, model_topics
from modelyard.stack.settings import StackSettings

__all__ = ["bootstrap_control", "create_stack_topics"]

log = structlog.get_logger(__name__)


def create_stack_topics(
    bootstrap: str, settings: StackSettings, specs: Sequence[PipelineSpec], repo: ModelRepository
) -> None:
    """Every pipeline's topics, the audit and control topics, each model version's topics."""
    prefix, partitions = settings.topic_prefix, settings.partitions
    for spec in specs:
        ensure_pipeline_topics(bootstrap, prefix, spec.pipeline, partitions)
    models = sorted({stage.model for spec in specs for stage in spec.stages.values()})
    names = [t for m in models for v in repo.versions(m) for t in model_topics(prefix, m, v)]
    create_topics(bootstrap, names, partitions=partitions)
    ensure_control_topic(bootstrap, prefix)


def bootstrap_control(
    bootstrap: str,
    settings: StackSettings,
    specs: Sequence[PipelineSpec],
    repo: ModelRepository,
    *,
    signer: SigningKey,
    verifier: ControlVerifier,
) -> None:
    """Roll out a version to every stage that has none (``--version`` or the latest), after
    checking that the resulting routing satisfies the pipeline's tensor contract; the records
    are signed by ``signer`` and read as routers read them, through ``verifier``."""
    _check_overrides(settings, specs)
    state = read_state(bootstrap, prefix=settings.topic_prefix, verifier=verifier)
    for spec in specs:
        routing = state.pipeline(spec.pipeline)
        latest = {s.model: _latest(repo, s.model) for s in spec.stages.values()}
        chosen = initial_versions(spec, routing, latest, settings.versions)
        _warn_ignored(spec, settings, set(spec.stages) - set(chosen))
        if not chosen:
            continue
        check_versions(spec, repo, routing, chosen)
        for stage, version in chosen.items():
            write_change(
                bootstrap, spec.pipeline, Rollout(stage=stage, version=version),
                signer=signer, verifier=verifier, reason="initial version",
                prefix=settings.topic_prefix,
            )  # fmt: skip


def _latest(repo: ModelRepository, model: str) -> str | None:
    versions = repo.versions(model)
    return versions[-1] if versions else None


def _check_overrides(settings: StackSettings, specs: Sequence[PipelineSpec]) -> None:
    known = {n for s in specs for n in s.stages} | {
        f"{s.pipeline}.{n}" for s in specs for n in s.stages
    }
    unknown = sorted(set(settings.versions) - known)
    if unknown:
        raise ConfigError(
            f"--version names no stage: {', '.join(unknown)} (stages: {sorted(known)})"
        )


def _warn_ignored(spec: PipelineSpec, settings: StackSettings, routed: set[str]) -> None:
    for stage in sorted(routed):
        if f"{spec.pipeline}.{stage}" in settings.versions or stage in settings.versions:
            log.warning("stage already has an active version; --version ignored (use rollout)",
                        pipeline=spec.pipeline, stage=stage)  # fmt: skip
