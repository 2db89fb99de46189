"""What ``modelyard up`` creates and starts, as pure functions of specs and routing state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from modelyard.control import ControlState, PipelineRouting
from modelyard.errors import ConfigError
from modelyard.graph.spec import PipelineSpec
from modelyard.topics import model_dlq_topic, model_input_topic

__all__ = [
    "ModelVersion",
    "initial_versions",
    "model_topics",
    "parse_versions",
    "shadow_only_versions",
    "version_roles",
]

ModelVersion = tuple[str, str]  # (model, version)


def model_topics(prefix: str, model: str, version: str) -> list[str]:
    """A model version's input topic and its dead letters."""
    return [model_input_topic(prefix, model, version), model_dlq_topic(prefix, model, version)]


def parse_versions(items: Iterable[str]) -> dict[str, str]:
    """``["ocr=2", "docs.langid=1"]`` -> ``{"ocr": "2", "docs.langid": "1"}``."""
    parsed: dict[str, str] = {}
    for item in items:
        stage, sep, version = item.partition("=")
        if not sep or not stage or not version:
            raise ConfigError(
                f"--version {item!r}: expected STAGE=VERSION or PIPELINE.STAGE=VERSION"
            )
        parsed[stage] = version
    return parsed


def initial_versions(
    spec: PipelineSpec,
    routing: PipelineRouting,
    latest: Mapping[str, str | None],
    overrides: Mapping[str, str],
) -> dict[str, str]:
    """The version to roll out to each stage that has no active version yet.

    ``overrides`` maps ``pipeline.stage`` or ``stage`` to a version; otherwise the model's
    latest version in ``latest`` (model -> version, None when the repository has none).
    """
    chosen: dict[str, str] = {}
    for name, stage in spec.stages.items():
        if routing.stage(name).active is not None:
            continue
        version = overrides.get(f"{spec.pipeline}.{name}") or overrides.get(name)
        version = version or latest.get(stage.model)
        if version is None:
            raise ConfigError(
                f"pipeline {spec.pipeline!r}, stage {name!r}: no version of model "
                f"{stage.model!r} in the repository"
            )
        chosen[name] = version
    return chosen


def version_roles(
    state: ControlState, specs: Iterable[PipelineSpec]
) -> dict[ModelVersion, set[str]]:
    """Every model version a router may send to, and as what: ``active``, ``canary``,
    ``shadow``, ``previous`` (only the newest, so a rollback finds a worker already running)."""
    roles: dict[ModelVersion, set[str]] = {}
    for spec in specs:
        routing = state.pipeline(spec.pipeline)
        for name, stage in spec.stages.items():
            r = routing.stage(name)
            candidates = [
                ("active", r.active),
                ("canary", r.canary.version if r.canary else None),
                ("shadow", r.shadow.version if r.shadow else None),
                ("previous", r.previous[-1] if r.previous else None),
            ]
            for role, version in candidates:
                if version is not None:
                    roles.setdefault((stage.model, version), set()).add(role)
    return roles


def shadow_only_versions(roles: Mapping[ModelVersion, set[str]]) -> set[ModelVersion]:
    """Versions that only take shadow copies: nothing a caller waits for depends on them."""
    return {mv for mv, used_as in roles.items() if used_as == {"shadow"}}
