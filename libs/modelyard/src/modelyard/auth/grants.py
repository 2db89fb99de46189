"""What a principal may call: pipelines (at a router) and models (at a stage).

A grant lists names; ``"*"`` matches every one. A model grant is ``"name"`` (every version) or
``"name:version"`` (that version only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ANY", "Grant"]

ANY = "*"


@dataclass(frozen=True, slots=True)
class Grant:
    """The pipelines and models one principal may call (the union of its entries)."""

    pipelines: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()

    @classmethod
    def everything(cls) -> Grant:
        return cls(frozenset({ANY}), frozenset({ANY}))

    @classmethod
    def union(cls, grants: Iterable[Grant]) -> Grant:
        pipelines: set[str] = set()
        models: set[str] = set()
        for grant in grants:
            pipelines |= grant.pipelines
            models |= grant.models
        return cls(frozenset(pipelines), frozenset(models))

    def allows_pipeline(self, pipeline: str) -> bool:
        return ANY in self.pipelines or pipeline in self.pipelines

    def allows_model(self, model: str, version: str) -> bool:
        models = self.models
        return ANY in models or model in models or f"{model}:{version}" in models
