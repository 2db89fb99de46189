"""Character error rate, the OCR quality figure used in tests, docs and manifests."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["cer", "edit_distance", "normalise"]


def normalise(text: str) -> str:
    """Whitespace collapsed to single spaces: line breaks are layout, not content."""
    return " ".join(text.split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus CER over (hypothesis, reference) pairs: total edits / total reference chars."""
    edits = chars = 0
    for hypothesis, reference in pairs:
        ref = normalise(reference)
        edits += edit_distance(normalise(hypothesis), ref)
        chars += len(ref)
    return edits / max(chars, 1)
