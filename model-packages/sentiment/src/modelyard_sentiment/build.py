"""Build ``sentiment:1`` (VADER) and ``sentiment:2`` (TF-IDF + LogReg ONNX) from one sdist.

Everything comes from the vaderSentiment 3.3.2 sdist: VADER's lexicons (artifacts of version 1)
and the human-rated snippets that version 2 is trained on. Both versions are scored on the same
held-out 20 %, and the figures go into the manifests.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from modelyard.repository.build import BuildContext, Fetched
from modelyard.repository.manifest import Manifest
from modelyard.runtimes.onnx import OnnxSession
from sklearn.metrics import accuracy_score, f1_score
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from modelyard_sentiment import data, tfidf
from modelyard_sentiment.vader import vader_label

__all__ = ["build", "score"]

PACKAGE, PACKAGE_VERSION = "vaderSentiment", "3.3.2"
LEXICONS = {"lexicon": "vader_lexicon.txt", "emoji_lexicon": "emoji_utf8_lexicon.txt"}
ONNX_FILE = "sentiment_tfidf_logreg.onnx"
_IO = {
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}],
    "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [1]},
        {"name": "scores", "datatype": "FP32", "shape": [3]},
    ],
    "limits": {"max_request_bytes": 64 * 1024, "max_text_chars": 5000},
}


def build(ctx: BuildContext) -> list[Manifest]:
    """Write both versions; version 2 is trained here, deterministically."""
    fetched = ctx.fetch(PACKAGE, PACKAGE_VERSION, sdist=True)
    lexicons = _extract_lexicons(fetched.path, ctx.scratch(f"{PACKAGE}-{PACKAGE_VERSION}"))
    split = data.split(data.load_rated(fetched.path))
    vader = _vader_metrics(lexicons, split)
    graph = tfidf.export(tfidf.train(split.train_texts, split.train_labels))
    metrics = {**_tfidf_metrics(graph, split), **vader}
    files: dict[str, Path | bytes] = dict(zip(LEXICONS.values(), lexicons, strict=True))
    return [
        ctx.write_version(_vader_manifest(fetched, vader), files),
        ctx.write_version(_tfidf_manifest(fetched, metrics), {ONNX_FILE: graph}),
    ]


def _extract_lexicons(sdist: Path, into: Path) -> list[Path]:
    """VADER's lexicon files from the sdist, in ``LEXICONS`` order."""
    paths = []
    with tarfile.open(sdist) as archive:
        for name in LEXICONS.values():
            member = archive.extractfile(f"{PACKAGE}-{PACKAGE_VERSION}/vaderSentiment/{name}")
            if member is None:
                raise FileNotFoundError(f"{name} missing from {sdist.name}")
            target = into.resolve() / name  # absolute: VADER resolves relative to its module
            target.write_bytes(member.read())
            paths.append(target)
    return paths


def score(truth: Sequence[int], predicted: Sequence[int]) -> dict[str, float]:
    """3-class accuracy, macro-F1, and accuracy on the polar (non-neutral) items."""
    y, p = np.asarray(truth), np.asarray(predicted)
    polar = y != 1
    return {
        "accuracy": round(float(accuracy_score(y, p)), 4),
        "macro_f1": round(float(f1_score(y, p, average="macro")), 4),
        "polar_accuracy": round(float(accuracy_score(y[polar], p[polar])), 4),
    }


def _vader_metrics(lexicons: list[Path], split: data.Split) -> dict[str, Any]:
    analyzer = SentimentIntensityAnalyzer(str(lexicons[0]), str(lexicons[1]))
    predicted = [vader_label(analyzer.polarity_scores(t)["compound"]) for t in split.test_texts]
    return {f"vader_{k}": v for k, v in score(split.test_labels, predicted).items()}


def _tfidf_metrics(graph: bytes, split: data.Split) -> dict[str, Any]:
    labels, _ = tfidf.predict_onnx(OnnxSession(graph).inference_session, split.test_texts)
    return {
        **score(split.test_labels, labels.tolist()),
        "train_items": len(split.train_texts),
        "test_items": len(split.test_texts),
    }


def _provenance(fetched: Fetched, path: str, notes: str) -> dict[str, Any]:
    return {
        "source": "pypi",
        "package": PACKAGE,
        "version": PACKAGE_VERSION,
        "sha256": fetched.sha256,
        "path": path,
        "license": "MIT",
        "notes": notes,
    }


def _vader_manifest(fetched: Fetched, metrics: dict[str, Any]) -> dict[str, Any]:
    split_note = "held-out 20% (seed 42) of the hutto_ICWSM_2014 human-rated snippets"
    return {
        "name": "sentiment",
        "version": "1",
        "description": "VADER 3.3.2 (rule-based, English); label from compound +-0.05.",
        "runtime": "python",
        "entrypoint": "modelyard_sentiment.vader:VaderModel",
        **_IO,
        "batching": {"max_batch_size": 32, "max_wait_ms": 0.0, "max_queue": 1024},
        "resources": {"cpu": 1.0, "memory_mb": 128, "gpu": 0},
        "parameters": dict(LEXICONS),
        "provenance": [_provenance(fetched, "vaderSentiment/", "lexicons, copied unchanged")],
        "metrics": {**{k.removeprefix("vader_"): v for k, v in metrics.items()}, "on": split_note},
    }


def _tfidf_manifest(fetched: Fetched, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "sentiment",
        "version": "2",
        "description": "TF-IDF (1-2-grams, 50k) + logistic regression trained on the "
        "human-rated snippets in the vaderSentiment sdist, as ONNX.",
        "runtime": "onnx",
        "entrypoint": "modelyard_sentiment.tfidf:TfidfSentimentModel",
        **_IO,
        "batching": {"max_batch_size": 64, "max_wait_ms": 0.0, "max_queue": 1024},
        "resources": {"cpu": 1.0, "memory_mb": 256, "gpu": 0},
        "parameters": {"onnx": ONNX_FILE, "opset": tfidf.TARGET_OPSET, "labels": data.LABELS},
        "provenance": [
            _provenance(
                fetched,
                data.ARCHIVE,
                "training data: Hutto & Gilbert, ICWSM 2014 (movie and Amazon snippets from "
                "Pang & Lee and Hu & Liu); model trained by modelyard_sentiment",
            )
        ],
        "metrics": metrics,
    }
