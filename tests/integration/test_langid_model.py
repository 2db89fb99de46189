"""The langid stage: langid.py's model as one ONNX graph, built from the pinned sdist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelyard.errors import PayloadTooLargeError, ValidationError
from modelyard.repository.build import BuildContext
from modelyard.repository.manifest import Manifest, load_manifest
from modelyard.tensors import as_tensor
from modelyard_langid import samples
from modelyard_langid.build import build
from modelyard_langid.export import identifier
from modelyard_langid.model import UNDETERMINED, LangIdModel
from modelyard_ocr.corpus import CORPUS

pytestmark = pytest.mark.integration

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "models"


@pytest.fixture(scope="session")
def langid_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("langid-models")
    build(BuildContext(root=root, cache=CACHE))
    return root


@pytest.fixture(scope="session", params=["1", "2"])
def model(request: pytest.FixtureRequest, langid_repo: Path) -> LangIdModel:
    path = langid_repo / "langid" / request.param
    loaded = LangIdModel(load_manifest(path), path)
    loaded.load()
    return loaded


def classify(model: LangIdModel, texts: list[str]) -> list[Any]:
    return model.predict([{"text": as_tensor(t)} for t in texts])


def language(outcome: Any) -> str:
    assert isinstance(outcome, dict), outcome
    return bytes(outcome["language"][0]).decode()


def test_manifest_records_full_agreement(model: LangIdModel) -> None:
    metrics = model.manifest.metrics
    assert metrics["agreement_with_langid"] == 1.0
    assert metrics["agreement_items"] == len(samples.all_texts())
    assert model.manifest.provenance[0].sha256
    assert model.manifest.provenance[0].license == "BSD-3-Clause"


def test_onnx_agrees_with_langid_on_every_text(model: LangIdModel) -> None:
    languages = model.manifest.parameters["languages"]
    ident = identifier(None if languages == "all" else languages)
    texts = [t for t in samples.all_texts() + _corpus_texts() if t.strip()]
    outcomes = classify(model, texts)
    for text, outcome in zip(texts, outcomes, strict=True):
        lang, prob = ident.classify(text)
        assert language(outcome) == lang, text
        assert float(outcome["probability"][0]) == pytest.approx(prob, abs=1e-5)


def _corpus_texts() -> list[str]:
    return [t for lang in sorted(CORPUS) for t in CORPUS[lang]]


@pytest.mark.parametrize("labelled", [CORPUS, samples.SENTENCES], ids=["corpus", "samples"])
def test_accuracy_on_sentences(model: LangIdModel, labelled: dict[str, list[str]]) -> None:
    pairs = [(lang, text) for lang in sorted(labelled) for text in labelled[lang]]
    got = [language(o) for o in classify(model, [t for _, t in pairs])]
    accuracy = sum(g == lang for g, (lang, _) in zip(got, pairs, strict=True)) / len(pairs)
    print(f"langid:{model.version} accuracy on {len(pairs)} sentences: {accuracy:.1%}")
    assert accuracy >= 0.9


def test_outputs_match_manifest(model: LangIdModel) -> None:
    (outcome,) = classify(model, ["Der Hund schläft im Garten."])
    assert isinstance(outcome, dict)
    assert outcome["language"].dtype == object
    assert outcome["language"].shape == (1,)
    assert outcome["probability"].dtype == np.float32
    assert outcome["probability"].shape == (1,)


def test_bad_items_fail_alone(model: LangIdModel) -> None:
    limit = model.manifest.limits.max_text_chars
    assert limit is not None
    batch = [
        {"text": as_tensor("a" * (limit + 1))},
        {"text": as_tensor("El museo estará cerrado mañana por la huelga.")},
        {"text": as_tensor(b"\xff\xfe not utf-8")},
        {"text": as_tensor("  ")},
    ]
    too_long, ok, not_utf8, blank = model.predict(batch)
    assert isinstance(too_long, PayloadTooLargeError)
    assert language(ok) == "es"
    assert isinstance(not_utf8, ValidationError)
    assert language(blank) == UNDETERMINED
    assert isinstance(blank, dict)
    assert float(blank["probability"][0]) == 0.0


def test_text_at_the_limit_is_accepted(model: LangIdModel) -> None:
    limit = model.manifest.limits.max_text_chars
    assert limit is not None
    (outcome,) = classify(model, ["Il museo sarà chiuso domani. " * (limit // 29)])
    assert language(outcome) == "it"


@pytest.mark.slow
def test_build_is_deterministic(langid_repo: Path, tmp_path: Path) -> None:
    again = build(BuildContext(root=tmp_path, cache=CACHE))
    for manifest in again:
        first = load_manifest(langid_repo / manifest.name / manifest.version)
        assert _hashes(manifest) == _hashes(first)


def _hashes(manifest: Manifest) -> dict[str, str]:
    return {a.path: a.sha256 for a in manifest.artifacts}
