"""CER per page set (columns, rotated, skewed; ``modelyard_ocr.pages``) for every OCR version.

The figures of docs/models/ocr.md: each version reads every page of every set, one page per
request, one thread; CER over the set's pages and seconds per page. ``--corpus`` adds the
one-paragraph clean and scan-like pages of all seven languages (``samples.render``).

    uv run --frozen python -m bench.ocr_pages [--versions 1 2 3] [--corpus]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from modelyard.repository.build import BuildContext
from modelyard.repository.manifest import load_manifest
from modelyard_ocr.build import build
from modelyard_ocr.corpus import CORPUS
from modelyard_ocr.metrics import cer
from modelyard_ocr.model import OcrModel
from modelyard_ocr.pages import PAGE_SETS, page_set
from modelyard_ocr.samples import render

ROOT = Path(__file__).resolve().parents[1]


def _request(data: bytes) -> dict[str, np.ndarray[Any, Any]]:
    tensor = np.empty(1, dtype=object)
    tensor[0] = data
    return {"image": tensor}


def _read(model: OcrModel, pages: list[tuple[bytes, str]]) -> tuple[float, float]:
    """(CER, seconds per page) over ``(image, truth)`` pairs."""
    start = time.perf_counter()
    outcomes = [model.predict([_request(image)])[0] for image, _ in pages]
    elapsed = (time.perf_counter() - start) / len(pages)
    texts = [o["text"][0].decode() if isinstance(o, dict) else "" for o in outcomes]
    return cer(zip(texts, [t for _, t in pages], strict=True)), elapsed


def _sets(corpus: bool) -> dict[str, list[tuple[bytes, str]]]:
    sets = {name: [(p.png, p.truth) for p in page_set(name)] for name in PAGE_SETS}
    if corpus:
        for noisy, kind in ((False, "clean"), (True, "noisy")):
            sets[f"7lang-{kind}"] = [
                (render(s, noisy=noisy, seed=k), s)
                for lang in CORPUS
                for k, s in enumerate(CORPUS[lang])
            ]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", nargs="+", default=["1", "2", "3"])
    parser.add_argument("--corpus", action="store_true", help="add the 7-language corpus pages")
    args = parser.parse_args()
    sets = _sets(args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        build(BuildContext(root=Path(tmp), cache=ROOT / ".cache" / "models"))
        print(f"{'set':<12} {'pages':>5} " + " ".join(f"{'ocr:' + v:>17}" for v in args.versions))
        models = {
            v: OcrModel(load_manifest(Path(tmp) / "ocr" / v), Path(tmp) / "ocr" / v)
            for v in args.versions
        }
        for model in models.values():
            model.load()
        for name, pages in sets.items():
            figures = [_read(models[v], pages) for v in args.versions]
            cells = " ".join(f"{c:>8.2%} {s:>6.2f}s/p" for c, s in figures)
            print(f"{name:<12} {len(pages):>5} {cells}", flush=True)
        for model in models.values():
            model.unload()


if __name__ == "__main__":
    main()
