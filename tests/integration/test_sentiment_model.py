"""The sentiment stage: VADER (sentiment:1) and TF-IDF + LogReg as ONNX (sentiment:2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelyard.errors import PayloadTooLargeError, ValidationError
from modelyard.model import Model
from modelyard.repository.build import BuildContext
from modelyard.repository.manifest import load_manifest
from modelyard.tensors import as_tensor
from modelyard_ocr.corpus import CORPUS, SENTIMENT
from modelyard_sentiment import data
from modelyard_sentiment.build import PACKAGE, PACKAGE_VERSION, build, score
from modelyard_sentiment.tfidf import TfidfSentimentModel
from modelyard_sentiment.vader import VaderModel

pytestmark = pytest.mark.integration

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "models"
ADAPTERS: dict[str, type[Model]] = {"1": VaderModel, "2": TfidfSentimentModel}


@pytest.fixture(scope="session")
def sentiment_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sentiment-models")
    build(BuildContext(root=root, cache=CACHE))
    return root


def load(repo: Path, version: str) -> Model:
    path = repo / "sentiment" / version
    model = ADAPTERS[version](load_manifest(path), path)
    model.load()
    return model


@pytest.fixture(scope="session")
def models(sentiment_repo: Path) -> dict[str, Model]:
    return {v: load(sentiment_repo, v) for v in ADAPTERS}


@pytest.fixture(scope="session")
def held_out() -> data.Split:
    sdist = BuildContext(root=CACHE, cache=CACHE).fetch(PACKAGE, PACKAGE_VERSION, sdist=True)
    return data.split(data.load_rated(sdist.path))


def labels(model: Model, texts: list[str]) -> list[str]:
    outcomes = model.predict([{"text": as_tensor(t)} for t in texts])
    return [bytes(_ok(o)["label"][0]).decode() for o in outcomes]


def _ok(outcome: Any) -> dict[str, np.ndarray[Any, Any]]:
    assert isinstance(outcome, dict), outcome
    return outcome


def test_manifest_metrics_show_tfidf_beats_vader(models: dict[str, Model]) -> None:
    metrics = models["2"].manifest.metrics
    print(
        f"held-out accuracy: tfidf {metrics['accuracy']:.1%}, vader {metrics['vader_accuracy']:.1%}"
    )
    assert metrics["accuracy"] > metrics["vader_accuracy"]
    assert metrics["test_items"] == 4741
    assert models["1"].manifest.metrics["accuracy"] == metrics["vader_accuracy"]


@pytest.fixture(scope="session")
def adapter_accuracy(models: dict[str, Model], held_out: data.Split) -> dict[str, float]:
    """Each version's held-out accuracy, measured by running its adapter on every item."""
    measured = {}
    for version, model in models.items():
        predicted = [data.LABELS.index(g) for g in labels(model, held_out.test_texts)]
        measured[version] = score(held_out.test_labels, predicted)["accuracy"]
    print(f"held-out accuracy measured through the adapters: {measured}")
    return measured


@pytest.mark.parametrize(("version", "key"), [("1", "vader_accuracy"), ("2", "accuracy")])
def test_adapters_reproduce_manifest_accuracy(
    models: dict[str, Model], adapter_accuracy: dict[str, float], version: str, key: str
) -> None:
    assert adapter_accuracy[version] == pytest.approx(models["2"].manifest.metrics[key], abs=1e-4)


def test_tfidf_beats_vader_when_run(adapter_accuracy: dict[str, float]) -> None:
    assert adapter_accuracy["2"] > adapter_accuracy["1"] + 0.03


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I love this phone, it is wonderful and works perfectly!", "positive"),
        ("This is terrible. I hate it and it broke after one day.", "negative"),
        ("The service was awful and the food was disgusting.", "negative"),
        ("What a great movie, the acting was excellent.", "positive"),
    ],
)
def test_obvious_sentences(
    models: dict[str, Model], version: str, text: str, expected: str
) -> None:
    assert labels(models[version], [text]) == [expected]


@pytest.mark.parametrize(("version", "bound"), [("1", 8), ("2", 8)])
def test_corpus_english_sentences(models: dict[str, Model], version: str, bound: int) -> None:
    got = labels(models[version], CORPUS["en"])
    right = sum(g == e for g, e in zip(got, SENTIMENT, strict=True))
    print(f"sentiment:{version} on the corpus' English sentences: {right}/{len(got)}")
    assert right >= bound


@pytest.mark.parametrize("version", ["1", "2"])
def test_outputs_and_bad_items(models: dict[str, Model], version: str) -> None:
    model = models[version]
    limit = model.manifest.limits.max_text_chars
    assert limit is not None
    batch = [
        {"text": as_tensor("x" * (limit + 1))},
        {"text": as_tensor("Lovely day!")},
        {"text": as_tensor(b"\xff\xfe")},
    ]
    too_long, ok, not_utf8 = model.predict(batch)
    assert isinstance(too_long, PayloadTooLargeError)
    assert isinstance(not_utf8, ValidationError)
    out = _ok(ok)
    assert out["label"].shape == (1,)
    assert out["scores"].dtype == np.float32
    assert out["scores"].shape == (3,)
    assert float(out["scores"].sum()) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.slow
def test_build_is_deterministic(sentiment_repo: Path, tmp_path: Path) -> None:
    for manifest in build(BuildContext(root=tmp_path, cache=CACHE)):
        first = load_manifest(sentiment_repo / manifest.name / manifest.version)
        assert {a.path: a.sha256 for a in manifest.artifacts} == {
            a.path: a.sha256 for a in first.artifacts
        }
