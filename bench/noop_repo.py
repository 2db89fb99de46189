"""A model repository holding ``noop:1``: the built-in Echo model, y = x, float32 vectors."""

from __future__ import annotations

from pathlib import Path

from modelyard.repository.build import BuildContext
from modelyard.repository.manifest import Manifest

__all__ = ["MODEL", "write_noop_repo"]

MODEL = "noop:1"

NOOP_MANIFEST = {
    "name": "noop",
    "version": "1",
    "description": "Returns its input: the cost of the serving path alone (benchmarks).",
    "runtime": "python",
    "entrypoint": "modelyard.runtimes.builtin:Echo",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
}


def write_noop_repo(root: Path) -> Manifest:
    """Write ``root/noop/1/`` (no artifacts) and return its manifest."""
    return BuildContext(root=root, cache=root / ".cache").write_version(NOOP_MANIFEST, files={})
