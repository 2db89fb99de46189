"""The model contract: load, predict on a batch, unload, plus metadata.

Every runtime (ONNX, resident subprocess, in-process Python) and every model adapter implements
``Model``. Nothing here knows about Kafka or gRPC: the stage core calls ``predict`` with a batch
of already-validated requests and gets one outcome per request back.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelyard.errors import ModelyardError

if TYPE_CHECKING:
    from modelyard.repository.manifest import Manifest

__all__ = ["Inputs", "Model", "Outcome", "Outputs"]

Inputs = Mapping[str, np.ndarray[Any, Any]]
Outputs = dict[str, np.ndarray[Any, Any]]
# A model may fail one request of a batch without failing the others by returning an error in
# its place (e.g. "not an image"); raising fails the whole batch, which the core then retries
# item by item to find the poison input.
Outcome = Outputs | ModelyardError


class Model(abc.ABC):
    """One model version, ready to serve after ``load``.

    Subclasses are built with the version's manifest and its directory, so an adapter finds its
    artifacts with ``self.path / name`` and its settings in ``self.manifest.parameters``.
    """

    def __init__(self, manifest: Manifest, path: Path) -> None:
        self.manifest = manifest
        self.path = path

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @abc.abstractmethod
    def load(self) -> None:
        """Acquire what predict needs (sessions, subprocesses, lexicons)."""

    @abc.abstractmethod
    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        """One outcome per request, in order. Inputs were validated against the manifest."""

    def unload(self) -> None:  # noqa: B027  # optional hook; most models hold nothing to release
        """Release what load acquired. Called once at shutdown."""

    def ready(self) -> bool:
        """Whether predict can be called now (a subprocess engine may be restarting)."""
        return True
