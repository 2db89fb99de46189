"""Reading the model repository: ``<root>/<name>/<version>/manifest.yaml`` plus artifacts.

A reference is ``name`` (the latest version) or ``name:version``. Versions sort naturally
(``2`` before ``10``, ``1.9`` before ``1.10``). Loading verifies every artifact's size and sha256
against the manifest before any model code runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from modelyard.errors import ArtifactIntegrityError, ConfigError
from modelyard.repository.build import sha256_file
from modelyard.repository.manifest import Artifact, Manifest, load_manifest
from modelyard.runtimes import create_model

if TYPE_CHECKING:
    from modelyard.model import Model

__all__ = ["ModelRepository", "natural_key", "parse_ref"]

log = structlog.get_logger(__name__)

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")  # as Manifest.name
_VERSION = re.compile(
    r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
)  # as Manifest.version, but never "." or ".."


def natural_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs by value: "2" < "10", "1.9" < "1.10"."""
    parts = re.split(r"(\d+)", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"name"`` -> (name, None); ``"name:version"`` -> (name, version); ConfigError otherwise."""
    name, sep, version = ref.partition(":")
    if not _NAME.match(name) or (sep and not _VERSION.match(version)):
        raise ConfigError(f"model reference {ref!r}: expected 'name' or 'name:version'")
    return name, version if sep else None


class ModelRepository:
    """A directory of model versions; every lookup error is a ConfigError that says what exists."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        """Model names, sorted (hidden entries such as a build cache are skipped)."""
        return sorted(p.name for p in _subdirs(self.root) if _NAME.match(p.name))

    def versions(self, name: str) -> list[str]:
        """Versions of ``name``, oldest first in natural order; [] for an unknown name."""
        found = [p.name for p in _subdirs(self.root / name) if _VERSION.match(p.name)]
        return sorted(found, key=natural_key)

    def resolve(self, ref: str) -> Path:
        """The version directory ``ref`` names; a bare name means its latest version."""
        name, version = parse_ref(ref)
        versions = self.versions(name)
        if not versions:
            raise ConfigError(f"no model {name!r} in {self.root}; models: {self.names()}")
        if version is None:
            return self.root / name / versions[-1]
        if version not in versions:
            raise ConfigError(f"no version {version!r} of model {name!r}; versions: {versions}")
        return self.root / name / version

    def manifest(self, ref: str) -> Manifest:
        """The manifest of ``ref``, checked to name the directory it lives in."""
        path = self.resolve(ref)
        manifest = load_manifest(path)
        if (manifest.name, manifest.version) != (path.parent.name, path.name):
            raise ConfigError(f"{path}: manifest says {manifest.ref}; a version may not be moved")
        return manifest

    def verify(self, ref: str) -> list[str]:
        """One line per artifact whose file is missing or differs from the manifest; [] if none.

        Files the manifest does not declare are allowed (e.g. a README).
        """
        path = self.resolve(ref)
        problems = (_check(path, a) for a in self.manifest(ref).artifacts)
        return [p for p in problems if p is not None]

    def load(self, ref: str, *, verify: bool = True) -> Model:
        """Verify ``ref``'s artifacts, then build and load its model. Returns it ready to serve."""
        manifest, path = self.manifest(ref), self.resolve(ref)
        if verify:
            problems = self.verify(manifest.ref)
            if problems:
                raise ArtifactIntegrityError(
                    f"{manifest.ref} at {path} fails verification: " + "; ".join(problems)
                )
        model = create_model(manifest, path)
        model.load()
        log.info("model loaded", model=manifest.ref, runtime=manifest.runtime, verified=verify)
        return model


def _subdirs(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]


def _check(version_dir: Path, artifact: Artifact) -> str | None:
    """What is wrong with one artifact's file, or None."""
    file = (version_dir / artifact.path).resolve()
    if not file.is_relative_to(version_dir.resolve()):
        return f"{artifact.path}: path leaves the version directory"
    if not file.is_file():
        return f"{artifact.path}: missing"
    size, digest = file.stat().st_size, sha256_file(file)
    if size == artifact.bytes and digest == artifact.sha256:
        return None
    return (
        f"{artifact.path}: expected sha256 {artifact.sha256} ({artifact.bytes} bytes), "
        f"got sha256 {digest} ({size} bytes)"
    )
