"""The human-rated sentiment data shipped in the vaderSentiment 3.3.2 sdist.

``additional_resources/hutto_ICWSM_2014.tar.gz`` holds 23,703 snippets (tweets, movie reviews,
Amazon reviews, NYT editorials) with the mean rating of about 20 people each on a -4..+4 scale
(Hutto & Gilbert, ICWSM 2014). We label them positive (>= 0.5), negative (<= -0.5) or neutral and
split them 80/20 with a fixed seed, so every build and every test sees the same split.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from sklearn.model_selection import train_test_split

__all__ = ["ARCHIVE", "LABELS", "SEED", "Split", "label_of", "load_rated", "split"]

ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
LABELS = ("negative", "neutral", "positive")  # class index order of every model and output
SEED = 42
THRESHOLD = 0.5


@dataclass(frozen=True)
class Split:
    """Texts and class indices (into ``LABELS``) for training and held-out testing."""

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]


def label_of(rating: float) -> int:
    """Class index of a mean human rating."""
    if rating >= THRESHOLD:
        return 2
    if rating <= -THRESHOLD:
        return 0
    return 1


def load_rated(sdist: Path) -> list[tuple[str, float]]:
    """Every ``(text, mean rating)`` of the ``*_GroundTruth.txt`` files, in file-name order."""
    with tarfile.open(sdist) as outer:
        inner_bytes = _read(outer, f"{outer.getnames()[0].split('/')[0]}/{ARCHIVE}")
    rows: list[tuple[str, float]] = []
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for name in sorted(n for n in inner.getnames() if n.endswith("_GroundTruth.txt")):
            rows += _parse(_read(inner, name).decode("utf-8", errors="replace"))
    return rows


def _read(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    if member is None:
        raise FileNotFoundError(f"{name} is not a file in the archive")
    return member.read()


def _parse(text: str) -> list[tuple[str, float]]:
    """Lines are ``id<TAB>mean rating<TAB>snippet`` (CRLF line ends)."""
    rows = []
    for line in text.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[2].strip():
            rows.append((parts[2].strip(), float(parts[1])))
    return rows


def split(rows: list[tuple[str, float]]) -> Split:
    """The 80/20 random split (seed 42) with 3-class labels."""
    texts = [t for t, _ in rows]
    labels = [label_of(r) for _, r in rows]
    tr_x, te_x, tr_y, te_y = train_test_split(texts, labels, test_size=0.2, random_state=SEED)
    return Split(list(tr_x), list(tr_y), list(te_x), list(te_y))
