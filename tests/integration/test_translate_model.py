"""The translate stage against the real Apertium chains from Debian (resident processes)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelyard.model import Outputs
from modelyard.repository.build import BuildContext
from modelyard_translate.build import build
from modelyard_translate.model import Translator

# No skip when Apertium is missing: `make setup` installs it, and a silent skip would hide that.
pytestmark = pytest.mark.integration

# (source sentence, English words its translation must contain, space separated). Output is
# literal (docs/models/translate.md), so key words are the ones Apertium is known to get right.
# fmt: off
SENTENCES: dict[str, list[tuple[str, str]]] = {
    "es": [
        ('Este restaurante es horrible y el servicio fue muy lento.',
         "horrible restaurant slow"),
        ('Me encanta este teléfono nuevo, la batería dura dos días.',
         "battery days telephone"),
        ('La película fue muy aburrida y demasiado larga.',
         "boring film long"),
        ('El hotel era limpio y el personal muy amable.',
         "clean hotel"),
        ('No recomiendo este producto, se rompió después de una semana.',
         "product recommend week"),
    ],
    "ca": [
        ('Aquest restaurant és horrible i el servei va ser molt lent.',
         "horrible restaurant slow"),
        ("M'encanta aquest telèfon nou, la bateria dura dos dies.",
         "battery days telephone"),
        ('La pel·lícula va ser molt avorrida i massa llarga.',
         "boring film"),
        ("L'hotel era net i el personal molt amable.",
         "clean hotel kind"),
        ("No recomano aquest producte, es va trencar després d'una setmana.",
         "product recommend week"),
    ],
    "fr": [
        ('Ce restaurant est horrible et le service était très lent.',
         "horrible restaurant slow"),
        ("J'adore ce nouveau téléphone, la batterie dure deux jours.",
         "battery days telephone"),
        ('Le film était très ennuyeux et trop long.',
         "film long"),
        ("L'hôtel était propre et le personnel très aimable.",
         "hotel"),
        ("Je ne recommande pas ce produit, il s'est cassé après une semaine.",
         "product recommend week"),
    ],
    "pt": [
        ('Este restaurante é horrível e o serviço foi muito lento.',
         "horrible restaurant slow"),
        ('Adoro este telefone novo, a bateria dura dois dias.',
         "battery days telephone"),
        ('O filme foi muito chato e longo demais.',
         "film"),
        ('O hotel era limpo e os funcionários muito simpáticos.',
         "clean hotel nice"),
        ('Não recomendo este produto, quebrou depois de uma semana.',
         "product recommend week"),
    ],
    "it": [
        ('Questo ristorante è orribile e il servizio era molto lento.',
         "horrible restaurant slow"),
        ('Adoro questo telefono nuovo, la batteria dura due giorni.',
         "battery days telephone"),
        ('Il film era molto noioso e troppo lungo.',
         "boring film long"),
        ("L'albergo era pulito e il personale molto gentile.",
         "personnel"),
        ('Non raccomando questo prodotto, si è rotto dopo una settimana.',
         "product recommend week"),
    ],
}
# fmt: on
ENGLISH = {
    "a",
    "adore",
    "after",
    "amiable",
    "and",
    "battery",
    "boring",
    "broke",
    "broken",
    "clean",
    "cleaned",
    "days",
    "do",
    "does",
    "enchants",
    "film",
    "hard",
    "has",
    "heavy",
    "horrible",
    "hostel",
    "hotel",
    "i",
    "is",
    "it",
    "kick",
    "kind",
    "long",
    "loves",
    "mass",
    "me",
    "nice",
    "not",
    "other",
    "personnel",
    "product",
    "recommend",
    "restaurant",
    "service",
    "slow",
    "smashed",
    "suitable",
    "telephone",
    "the",
    "this",
    "too",
    "two",
    "very",
    "was",
    "week",
}


def words(text: str) -> list[str]:
    return re.findall(r"[a-zà-ÿ·']+", text.lower())


def tensor(values: list[str]) -> np.ndarray[Any, Any]:
    out = np.empty(len(values), dtype=object)
    out[:] = [v.encode() for v in values]
    return out


def ask(model: Translator, texts: list[str], languages: list[str]) -> Outputs:
    [outcome] = model.predict([{"text": tensor(texts), "language": tensor(languages)}])
    assert isinstance(outcome, dict), outcome
    return outcome


@pytest.fixture(scope="module")
def translator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Translator]:
    root = tmp_path_factory.mktemp("repo")
    [manifest] = build(BuildContext(root / "models", root / "cache"))
    model = Translator(manifest, root / "models" / "translate" / "1")
    model.load()
    yield model
    model.unload()


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_sentences_come_out_as_english(translator: Translator, language: str) -> None:
    texts = [s for s, _ in SENTENCES[language]]
    out = ask(translator, texts, [language] * len(texts))
    route = f"{language}>en" if language in ("es", "ca") else f"{language}>es>en"
    for (source, expected), raw, status, got in zip(
        SENTENCES[language], out["translation"], out["status"], out["route"], strict=True
    ):
        english = raw.decode()
        tokens = words(english)
        assert status == b"translated"
        assert got == route.encode()
        assert english != source
        assert set(expected.split()) <= set(tokens), english
        assert sum(t in ENGLISH for t in tokens) >= 0.75 * len(tokens), english
        assert "*" not in english  # unknown words are not marked


def test_english_passes_through_and_german_is_unsupported(translator: Translator) -> None:
    text = "The service was slow, but the food was great."
    out = ask(translator, [text, "Das Essen war ausgezeichnet."], ["en", "de"])
    assert out["translation"].tolist() == [text.encode(), b""]
    assert out["status"].tolist() == [b"passthrough", b"unsupported"]
    assert out["route"].tolist() == [b"en", b""]


def test_batch_mixing_languages(translator: Translator) -> None:
    languages = ["es", "en", "de", "fr", "pt-BR", "it", "ca"]
    texts = [SENTENCES.get(lang[:2], [("Hallo Welt", "")])[0][0] for lang in languages]
    texts[1] = "Hello world"
    batch = [
        {"text": tensor([t]), "language": tensor([lang])}
        for t, lang in zip(texts, languages, strict=True)
    ]
    outcomes = translator.predict(batch)
    statuses = [o["status"][0] for o in outcomes if isinstance(o, dict)]
    assert statuses == [b"translated", b"passthrough", b"unsupported", *[b"translated"] * 4]
    for outcome, lang in zip(outcomes, languages, strict=True):
        assert isinstance(outcome, dict)
        english = outcome["translation"][0].decode()
        if lang not in ("en", "de"):
            # cat-eng keeps some context across requests: "slow" may come out as "slowly"
            assert {"restaurant", "horrible"} <= set(words(english)), (lang, english)
            assert "slow" in english, (lang, english)


def test_resident_process_survives_200_sentences(translator: Translator) -> None:
    engine = translator.pairs["spa-eng"].engine
    pids, restarts = engine.pids, engine.restarts
    texts = [SENTENCES["es"][i % 5][0] for i in range(200)]
    out = ask(translator, texts, ["es"] * 200)
    assert all(b"week" in t or b"days" in t or b"slow" in t or b"film" in t or b"hotel" in t
               for t in out["translation"])  # fmt: skip
    assert engine.pids == pids
    assert engine.restarts == restarts


@pytest.fixture
def own_translator(translator: Translator) -> Iterator[Translator]:
    """A translator of this test's own, so the chains it restarts stop when it ends."""
    model = Translator(translator.manifest, translator.path)
    model.load()
    yield model
    model.unload()


def test_killed_apertium_module_is_restarted_and_request_answered(
    own_translator: Translator,
) -> None:
    translator = own_translator
    engine = translator.pairs["spa-eng"].engine
    before = engine.restarts
    victim = engine.pids[3]  # lt-proc -b, in the middle of the chain
    os.kill(victim, signal.SIGKILL)
    out = ask(translator, [SENTENCES["es"][0][0]], ["es"])
    assert out["translation"][0] == b"This restaurant is horrible and the service was very slow."
    assert engine.restarts == before + 1
    assert victim not in engine.pids


def test_load_names_the_missing_debian_package(tmp_path: Path, translator: Translator) -> None:
    from modelyard.errors import ConfigError  # noqa: PLC0415

    params = {**translator.manifest.parameters, "modes_dir": str(tmp_path), "mode_files": {}}
    manifest = translator.manifest.model_copy(update={"parameters": params})
    with pytest.raises(ConfigError, match="apt-get install apertium-"):
        Translator(manifest, tmp_path).load()


def test_build_twice_gives_identical_hashes(tmp_path: Path) -> None:
    [first] = build(BuildContext(tmp_path / "a", tmp_path / "cache"))
    [second] = build(BuildContext(tmp_path / "b", tmp_path / "cache"))
    assert first.artifacts == second.artifacts
    assert first.artifacts  # something was pinned
    assert first.provenance == second.provenance
