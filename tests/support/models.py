"""Python models for tests, importable by stage subprocesses (``tests.support.models:...``)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from modelyard.model import Inputs, Model, Outcome
from modelyard.repository.build import BuildContext
from modelyard.repository.manifest import Manifest, load_manifest

__all__ = [
    "AlwaysPositive",
    "Broken",
    "Shout",
    "copy_version",
    "write_broken_version",
    "write_shout_version",
]


class Shout(Model):
    """Upper-cases text; raises on b"boom" (poison), kills its process on b"die" (a native
    crash or the OOM killer, which nothing in the process can catch) and sleeps on
    b"slow:<ms>"."""

    def load(self) -> None:
        self._pause = threading.Event()

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        out: list[Outcome] = []
        for inputs in batch:
            texts = [bytes(t) for t in inputs["text"].tolist()]
            if b"boom" in texts:
                raise RuntimeError("the model cannot digest 'boom'")
            if b"die" in texts:
                os.kill(os.getpid(), signal.SIGKILL)
            for t in texts:
                if t.startswith(b"slow:"):
                    self._pause.wait(int(t[5:]) / 1000)  # a slow model, for backpressure tests
            out.append({"shout": _upper(texts)})
        return out


def _upper(texts: list[bytes]) -> np.ndarray[Any, Any]:
    arr = np.empty(len(texts), dtype=object)
    arr[:] = [t.upper() for t in texts]
    return arr


def write_shout_version(ctx: BuildContext, version: str = "1", **batching: Any) -> Manifest:
    return ctx.write_version(
        {
            "name": "shout",
            "version": version,
            "runtime": "python",
            "entrypoint": "tests.support.models:Shout",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "shout", "datatype": "BYTES", "shape": [-1]}],
            "batching": {"max_batch_size": 16, "max_wait_ms": 1, "max_queue": 256, **batching},
            "limits": {"max_request_bytes": 64 * 1024},
        },
        files={},
    )


class Broken(Shout):
    """Shout's contract, but every prediction fails: a bad release, for guard rules."""

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        raise RuntimeError("this version is broken")


def write_broken_version(ctx: BuildContext, version: str) -> Manifest:
    """``shout:<version>`` served by :class:`Broken` (same tensors as the good versions)."""
    manifest = write_shout_version(ctx, version)
    data = manifest.model_dump(mode="json", exclude={"artifacts"})
    return ctx.write_version({**data, "entrypoint": "tests.support.models:Broken"}, files={})


class AlwaysPositive(Model):
    """The sentiment model's contract, answering "positive" to everything: a release that
    drifts, for the monitor's guards."""

    def load(self) -> None:
        """Nothing to load: it never reads its input."""

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        out: list[Outcome] = []
        for _ in batch:
            label = np.empty(1, dtype=object)
            label[0] = b"positive"
            out.append({"label": label, "scores": np.array([0.0, 0.2, 0.8], dtype=np.float32)})
        return out


def copy_version(
    ctx: BuildContext, source: Path, version: str, entrypoint: str | None = None
) -> Manifest:
    """``<model>:<version>`` in ``ctx``, a copy of the built version at ``source`` (its files
    and manifest); with ``entrypoint``, a python model of that contract instead (no files)."""
    manifest = load_manifest(source)
    data = manifest.model_dump(mode="json", exclude={"artifacts"})
    if entrypoint is not None:
        data = {**data, "runtime": "python", "entrypoint": entrypoint, "parameters": {}}
        return ctx.write_version({**data, "version": version}, files={})
    files = {a.path: source / a.path for a in manifest.artifacts}
    return ctx.write_version({**data, "version": version}, files=files)


# two stages of the shout model, one after the other: the control and stack tests' pipeline
SHOUTY_SPEC = """\
pipeline: shouty
version: 1
inputs:
  text: {datatype: BYTES, shape: [-1]}
stages:
  first: {model: shout, inputs: {text: request.text}}
  second: {model: shout, inputs: {text: first.shout}}
outputs:
  shout: second.shout
"""


def shouty_layout(root: Path) -> tuple[Path, Path]:
    """Under ``root``: a repository with shout:1 and shout:2, and SHOUTY_SPEC's file;
    returns (repository, spec path)."""
    ctx = BuildContext(root=root / "models", cache=root / ".cache")
    write_shout_version(ctx, version="1")
    write_shout_version(ctx, version="2")
    spec = root / "shouty.yaml"
    spec.write_text(SHOUTY_SPEC)
    return root / "models", spec
