"""Runtimes: how a manifest becomes a ``Model`` (ONNX, resident subprocess, in-process Python).

Runtime modules are imported only when a manifest asks for them, so a service that runs Python
models needs neither onnxruntime nor the subprocess machinery.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.errors import ConfigError
from modelyard.runtimes.python import load_entrypoint

if TYPE_CHECKING:
    from modelyard.model import Model
    from modelyard.repository.manifest import Manifest

__all__ = ["DEFAULT_ENTRYPOINTS", "create_model", "load_entrypoint"]

# The generic Model per runtime, for manifests without an entrypoint (python has none).
DEFAULT_ENTRYPOINTS = {
    "onnx": "modelyard.runtimes.onnx:OnnxModel",
    "subprocess": "modelyard.runtimes.subprocess:SubprocessModel",
}


def create_model(manifest: Manifest, path: Path) -> Model:
    """An unloaded ``Model`` for ``manifest``: its entrypoint, else its runtime's generic model."""
    entrypoint = manifest.entrypoint or DEFAULT_ENTRYPOINTS.get(manifest.runtime)
    if entrypoint is None:
        raise ConfigError(
            f"{manifest.ref}: runtime {manifest.runtime!r} needs an entrypoint ('module:Class')"
        )
    return load_entrypoint(entrypoint)(manifest, path)
