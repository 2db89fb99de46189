"""``sentiment:2``: TF-IDF (1-2-grams, 50k features) + logistic regression, run as ONNX.

Trained at build time on the human-rated snippets of the vaderSentiment sdist (``data.py``) and
exported with skl2onnx. The graph takes ``text`` tensor(string) [N,1] and answers ``label``
int64 [N] and ``probabilities`` float32 [N,3] (negative, neutral, positive). Its string ops
(StringNormalizer, the ``com.microsoft`` Tokenizer, TfIdfVectorizer) run on CPU only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from modelyard.model import Inputs, Model, Outcome
from modelyard.runtimes.onnx import OnnxSession
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # ships no types

from modelyard_sentiment._common import check_texts, outputs

__all__ = ["TARGET_OPSET", "TfidfSentimentModel", "export", "predict_onnx", "train"]

# Opsets that onnxruntime 1.2x-1.3x all run; IR 8 matches them (newer onnx writes a newer IR).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
IR_VERSION = 8
MAX_FEATURES = 50_000
SEED = 42


def train(texts: Sequence[str], labels: Sequence[int]) -> Pipeline:
    """Fit the pipeline deterministically (fixed seed, one BLAS thread)."""
    pipe = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), max_features=MAX_FEATURES)),
            ("logreg", LogisticRegression(max_iter=2000, random_state=SEED)),
        ]
    )
    with threadpool_limits(limits=1):  # threaded BLAS may sum in another order: other bytes
        pipe.fit(list(texts), list(labels))
    return pipe


def export(pipe: Pipeline) -> bytes:
    """The fitted pipeline as ONNX bytes (identical for an identical pipeline)."""
    from skl2onnx import convert_sklearn  # noqa: PLC0415  # heavy; only builds need it
    from skl2onnx.common.data_types import StringTensorType  # noqa: PLC0415

    options = {
        # skl2onnx defaults to en_US.UTF-8, which slim images lack: the session would not start.
        id(pipe.named_steps["tfidf"]): {"locale": "C.UTF-8"},
        id(pipe.named_steps["logreg"]): {"zipmap": False},  # a plain [N,3] tensor, not dicts
    }
    model = convert_sklearn(
        pipe,
        "sentiment_tfidf_logreg",
        initial_types=[("text", StringTensorType([None, 1]))],
        options=options,
        target_opset=TARGET_OPSET,
    )
    model.ir_version = IR_VERSION
    return bytes(model.SerializeToString(deterministic=True))


def predict_onnx(sess: Any, texts: Sequence[str]) -> tuple[np.ndarray[Any, Any], ...]:
    """``(labels [N], probabilities [N,3])`` from an ONNX session of ``export``'s graph."""
    column = np.array(list(texts), dtype=object).reshape(-1, 1)
    labels, probs = sess.run(["label", "probabilities"], {"text": column})
    return np.asarray(labels), np.asarray(probs)


class TfidfSentimentModel(Model):
    """The exported TF-IDF + logistic regression graph; ``scores`` are its probabilities."""

    def load(self) -> None:
        self._session = OnnxSession(self.path / self.manifest.parameters["onnx"]).inference_session

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        checked = check_texts(batch, self.manifest.limits.max_text_chars)
        texts = [t for t in checked if isinstance(t, str)]
        if not texts:
            return [c for c in checked if not isinstance(c, str)]
        labels, probs = predict_onnx(self._session, texts)
        answers = iter(zip(labels.tolist(), probs, strict=True))
        out: list[Outcome] = []
        for item in checked:
            if isinstance(item, str):
                label, prob = next(answers)
                out.append(outputs(int(label), prob))
            else:
                out.append(item)
        return out
