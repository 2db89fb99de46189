"""The model repository: ``<root>/<name>/<version>/manifest.yaml`` plus artifacts."""

from modelyard.repository.manifest import (
    Artifact,
    Batching,
    Limits,
    Manifest,
    Provenance,
    Resources,
    load_manifest,
)

__all__ = ["Artifact", "Batching", "Limits", "Manifest", "Provenance", "Resources", "load_manifest"]
