"""Per-model throughput on this machine: items/s at batch 1 and at the best batch size.

Each model is one ``Entry`` in ``ENTRIES`` (adapter, builder, workload); adding a model is adding
an entry. Versions come from ``<repo>/models`` (``make models``); a version missing there is
built into it first by its service's builder. Run ``python -m bench.models_bench [--json]``.
"""

from __future__ import annotations

import os

# Threaded BLAS makes langid's numpy work 15x slower on small machines (docs/models/langid.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # after the thread settings, which must precede numpy
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.model import Inputs, Model
from modelyard.repository.build import BuildContext
from modelyard.repository.manifest import Manifest, load_manifest
from modelyard.tensors import as_tensor

__all__ = ["ENTRIES", "Entry", "main", "run"]

SECONDS_PER_POINT = 1.0  # time spent at each batch size
BATCHES = (1, 4, 16, 64)
OCR_BATCHES = (1, 2, 4)  # pages are slow (8-30/s) and the manifests batch at most 4
OCR_PAGES = 4  # rendered pages per language (en, es)


@dataclass(frozen=True)
class Entry:
    """One model version to measure."""

    name: str
    version: str
    adapter: Callable[[Manifest, Path], Model]
    builder: Callable[[BuildContext], list[Manifest]]
    workload: Callable[[], list[Inputs]]  # requests, cycled through
    batches: tuple[int, ...] = BATCHES


def _texts() -> list[Inputs]:
    from modelyard_langid.samples import SENTENCES  # noqa: PLC0415  # bench-only imports

    return [{"text": as_tensor(t)} for lang in sorted(SENTENCES) for t in SENTENCES[lang]]


def _english() -> list[Inputs]:
    from modelyard_langid.samples import SENTENCES  # noqa: PLC0415
    from modelyard_ocr.corpus import CORPUS  # noqa: PLC0415

    return [{"text": as_tensor(t)} for t in CORPUS["en"] + SENTENCES["en"]]


def _pages() -> list[Inputs]:
    """Clean rendered pages of English and Spanish sentences, one encoded PNG per request."""
    from modelyard_ocr.corpus import CORPUS  # noqa: PLC0415
    from modelyard_ocr.samples import render  # noqa: PLC0415

    return [
        {"image": as_tensor(render(text))}
        for lang in ("en", "es")
        for text in CORPUS[lang][:OCR_PAGES]
    ]


def _spanish() -> list[Inputs]:
    from modelyard_langid.samples import SENTENCES  # noqa: PLC0415

    return [{"text": as_tensor(t), "language": as_tensor("es")} for t in SENTENCES["es"]]


def _entries() -> list[Entry]:
    from modelyard_langid.build import build as langid_build  # noqa: PLC0415
    from modelyard_langid.model import LangIdModel  # noqa: PLC0415
    from modelyard_ocr.build import build as ocr_build  # noqa: PLC0415
    from modelyard_ocr.model import OcrModel  # noqa: PLC0415
    from modelyard_sentiment.build import build as sentiment_build  # noqa: PLC0415
    from modelyard_sentiment.tfidf import TfidfSentimentModel  # noqa: PLC0415
    from modelyard_sentiment.vader import VaderModel  # noqa: PLC0415
    from modelyard_translate.build import build as translate_build  # noqa: PLC0415
    from modelyard_translate.model import Translator  # noqa: PLC0415

    return [
        Entry("ocr", "1", OcrModel, ocr_build, _pages, OCR_BATCHES),
        Entry("ocr", "2", OcrModel, ocr_build, _pages, OCR_BATCHES),
        Entry("ocr", "3", OcrModel, ocr_build, _pages, OCR_BATCHES),
        Entry("langid", "1", LangIdModel, langid_build, _texts),
        Entry("langid", "2", LangIdModel, langid_build, _texts),
        Entry("sentiment", "1", VaderModel, sentiment_build, _english),
        Entry("sentiment", "2", TfidfSentimentModel, sentiment_build, _english),
        Entry("translate", "1", Translator, translate_build, _spanish, (1, 4, 16)),
    ]


ENTRIES: Callable[[], list[Entry]] = _entries  # a function: imports happen only when run


def _version_dir(entry: Entry, repo_root: Path) -> Path:
    """The built version in ``models/``, built there first (every version of its service)."""
    path = repo_root / "models" / entry.name / entry.version
    if not (path / "manifest.yaml").exists():
        print(f"models: building {entry.name} into {path.parent.parent} ...", flush=True)
        entry.builder(
            BuildContext(root=repo_root / "models", cache=repo_root / ".cache" / "models")
        )
    return path


def _items_per_s(model: Model, requests: Sequence[Inputs], batch: int) -> float:
    """Steady-state throughput at one batch size (after one warm-up call)."""
    batches = [
        [requests[(i + j) % len(requests)] for j in range(batch)] for i in range(len(requests))
    ]
    model.predict(batches[0])
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < SECONDS_PER_POINT:
        model.predict(batches[done // batch % len(batches)])
        done += batch
    return done / elapsed


def measure(entry: Entry, repo_root: Path) -> dict[str, Any]:
    """Items/s at batch 1 and at the best of ``entry.batches`` for one model version."""
    path = _version_dir(entry, repo_root)
    model = entry.adapter(load_manifest(path), path)
    model.load()
    requests = entry.workload()
    rates = {b: _items_per_s(model, requests, b) for b in entry.batches}
    model.unload()
    best = max(rates, key=lambda b: rates[b])
    return {
        "model": f"{entry.name}:{entry.version}",
        "runtime": model.manifest.runtime,
        "batch1_items_s": round(rates[1]),
        "best_batch": best,
        "best_items_s": round(rates[best]),
    }


def run(repo_root: Path) -> list[dict[str, Any]]:
    """Measure every entry; one result dict per model version."""
    return [measure(entry, repo_root) for entry in ENTRIES()]


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """The results as a fixed-width table on stdout."""
    print(f"{'model':<14} {'runtime':<10} {'batch 1/s':>10} {'best batch':>10} {'best/s':>9}")
    for r in rows:
        print(
            f"{r['model']:<14} {r['runtime']:<10} {r['batch1_items_s']:>10} "
            f"{r['best_batch']:>10} {r['best_items_s']:>9}"
        )
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table for this checkout (``--json``: one JSON list on the last line instead)."""
    parser = argparse.ArgumentParser(description="items/s per reference model version")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    args = parser.parse_args(argv)
    rows = run(Path(__file__).resolve().parents[1])
    if args.json:
        print(json.dumps(rows), flush=True)
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
