"""``sentiment:1``: VADER, the rule-based English sentiment analyser, run in-process.

The lexicons are artifacts of the version (copied from the vaderSentiment 3.3.2 sdist and pinned
by sha256), so the version cannot drift with the installed package's data files.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelyard.model import Inputs, Model, Outcome
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from modelyard_sentiment._common import check_texts, outputs

__all__ = ["COMPOUND_THRESHOLD", "VaderModel", "vader_label"]

COMPOUND_THRESHOLD = 0.05  # VADER's documented cut-off between neutral and polar


def vader_label(compound: float) -> int:
    """Class index (negative, neutral, positive) of a VADER compound score."""
    if compound >= COMPOUND_THRESHOLD:
        return 2
    if compound <= -COMPOUND_THRESHOLD:
        return 0
    return 1


class VaderModel(Model):
    """VADER: ``label`` from the compound score, ``scores`` = VADER's (neg, neu, pos)."""

    def load(self) -> None:
        params = self.manifest.parameters
        # Absolute paths: VADER joins them to its module directory, which keeps them as they are.
        self._analyzer = SentimentIntensityAnalyzer(
            lexicon_file=str((self.path / params["lexicon"]).resolve()),
            emoji_lexicon=str((self.path / params["emoji_lexicon"]).resolve()),
        )

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        out: list[Outcome] = []
        for text in check_texts(batch, self.manifest.limits.max_text_chars):
            if not isinstance(text, str):
                out.append(text)
                continue
            s = self._analyzer.polarity_scores(text)
            out.append(outputs(vader_label(s["compound"]), (s["neg"], s["neu"], s["pos"])))
        return out
