"""Build the ``langid`` model versions from the langid 1.1.6 sdist.

Each version is langid's naive-Bayes model exported to one ONNX graph (``export.py``). The build
refuses to write a version unless the graph gives langid's own answer on every sample text
(``samples.py``), and records that agreement and the accuracy on the samples in the manifest.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import util
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError
from modelyard.repository.build import BuildContext, Fetched, sha256_file
from modelyard.repository.manifest import Manifest
from modelyard.runtimes.onnx import OnnxSession

from modelyard_langid import samples
from modelyard_langid.export import OPSET, export_bytes, identifier
from modelyard_langid.model import encode

__all__ = ["VERSIONS", "VersionSpec", "build", "verify"]

PACKAGE, PACKAGE_VERSION = "langid", "1.1.6"
MODEL_PATH = "langid/langid.py"  # the model is a base64/bz2 pickle inside this file
ONNX_FILE = "langid.onnx"


@dataclass(frozen=True)
class VersionSpec:
    """One version to build: its label and the languages it can answer (None: all 97)."""

    version: str
    languages: tuple[str, ...] | None
    description: str


VERSIONS = (
    VersionSpec("1", None, "langid.py 1.1.6, all 97 languages, as one ONNX graph."),
    VersionSpec(
        "2",
        ("ca", "de", "en", "es", "fr", "it", "pt"),
        "langid.py 1.1.6 restricted to the pipeline's 7 languages (faster, fewer confusions).",
    ),
)


def build(ctx: BuildContext) -> list[Manifest]:
    """Write every version in ``VERSIONS``; fail if a graph disagrees with langid."""
    fetched = ctx.fetch(PACKAGE, PACKAGE_VERSION, sdist=True)
    _check_installed_matches(fetched)
    built = []
    for spec in VERSIONS:
        graph = export_bytes(spec.languages)
        metrics = verify(graph, spec.languages)
        built.append(ctx.write_version(_manifest(spec, fetched, metrics), {ONNX_FILE: graph}))
    return built


def _check_installed_matches(fetched: Fetched) -> None:
    """The model is read from the installed langid: it must be the sdist's file, byte for byte."""
    with tarfile.open(fetched.path) as sdist:
        member = sdist.extractfile(f"{PACKAGE}-{PACKAGE_VERSION}/{MODEL_PATH}")
        if member is None:
            raise ConfigError(f"{fetched.path.name} has no {MODEL_PATH}")
        expected = hashlib.sha256(member.read()).hexdigest()
    spec = util.find_spec("langid.langid")
    if spec is None or spec.origin is None:
        raise ConfigError("langid is not installed")
    got = sha256_file(Path(spec.origin))
    if got != expected:
        raise ConfigError(f"installed {MODEL_PATH} differs from the sdist ({got} != {expected})")


def verify(graph: bytes, languages: Sequence[str] | None) -> dict[str, Any]:
    """Agreement with langid on every sample (must be 1.0) and accuracy on the labelled ones."""
    texts = samples.all_texts()
    ident = identifier(languages)
    expected = [ident.classify(t) for t in texts]
    sess = OnnxSession(graph).inference_session
    classes = sess.get_modelmeta().custom_metadata_map["classes"].split(",")
    labels, probs = sess.run(["label", "prob"], encode([t.encode() for t in texts]))
    got = [classes[int(i)] for i in labels]
    disagree = [t for t, g, (e, _) in zip(texts, got, expected, strict=True) if g != e]
    if disagree:
        raise ConfigError(f"ONNX langid disagrees with langid on {len(disagree)}: {disagree[:5]}")
    prob_diff = max(
        abs(float(p[i]) - c) for p, i, (_, c) in zip(probs, labels, expected, strict=True)
    )
    return {
        "agreement_with_langid": 1.0,
        "agreement_items": len(texts),
        "max_abs_prob_diff": float(f"{prob_diff:.2g}"),
        "accuracy_sentences": _accuracy(samples.SENTENCES, dict(zip(texts, got, strict=True))),
        "accuracy_snippets": _accuracy(samples.SNIPPETS, dict(zip(texts, got, strict=True))),
    }


def _accuracy(labelled: dict[str, list[str]], predicted: dict[str, str]) -> float:
    pairs = [(lang, predicted[t]) for lang, texts in labelled.items() for t in texts]
    return round(sum(lang == got for lang, got in pairs) / len(pairs), 4)


def _manifest(spec: VersionSpec, fetched: Fetched, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "langid",
        "version": spec.version,
        "description": spec.description,
        "runtime": "onnx",
        "entrypoint": "modelyard_langid.model:LangIdModel",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}],
        "outputs": [
            {"name": "language", "datatype": "BYTES", "shape": [1]},
            {"name": "probability", "datatype": "FP32", "shape": [1]},
        ],
        "batching": {"max_batch_size": 64, "max_wait_ms": 0.0, "max_queue": 1024},
        "resources": {"cpu": 1.0, "memory_mb": 256, "gpu": 0},
        "limits": {"max_request_bytes": 64 * 1024, "max_text_chars": 5000},
        "parameters": {"onnx": ONNX_FILE, "opset": OPSET, "languages": spec.languages or "all"},
        "provenance": [
            {
                "source": "pypi",
                "package": PACKAGE,
                "version": PACKAGE_VERSION,
                "sha256": fetched.sha256,
                "path": MODEL_PATH,
                "license": "BSD-3-Clause",
                "notes": "naive-Bayes model and byte DFA, exported to ONNX by modelyard_langid",
            }
        ],
        "metrics": metrics,
    }
