"""The language-ID stage: one text in, its ISO 639-1 code and probability out.

Each request carries ``text`` (BYTES [1], UTF-8). The valid texts of a batch run through the
ONNX graph together; a text that is not UTF-8 or is longer than ``limits.max_text_chars`` fails
alone. A text with nothing but whitespace has no language: it gets ``und`` (ISO 639-2 for
"undetermined") with probability 0, where langid itself would answer its prior's favourite, ``en``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from modelyard.errors import ModelyardError, PayloadTooLargeError, ValidationError
from modelyard.model import Inputs, Model, Outcome, Outputs
from modelyard.runtimes.onnx import OnnxSession

__all__ = ["UNDETERMINED", "LangIdModel", "encode"]

UNDETERMINED = "und"


def encode(texts: Sequence[bytes]) -> dict[str, np.ndarray[Any, Any]]:
    """The graph's inputs: zero-padded bytes [N, max(1, L)] and true lengths [N]."""
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    out = np.zeros((len(texts), max(1, int(lengths.max(initial=0)))), dtype=np.int64)
    for row, text in enumerate(texts):
        out[row, : len(text)] = np.frombuffer(text, dtype=np.uint8)
    return {"bytes": out, "lengths": lengths}


class LangIdModel(Model):
    """langid.py's 97-language naive Bayes, run as one ONNX graph."""

    def load(self) -> None:
        self._session = OnnxSession(self.path / self.manifest.parameters["onnx"]).inference_session
        meta = self._session.get_modelmeta().custom_metadata_map
        self._classes = [c.encode() for c in meta["classes"].split(",")]
        self._max_chars = self.manifest.limits.max_text_chars

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        todo: list[tuple[int, bytes]] = []  # (position in batch, text) for the graph
        for inputs in batch:
            checked = self._check(inputs["text"])
            if isinstance(checked, bytes):
                todo.append((len(outcomes), checked))
                outcomes.append({})  # placeholder, filled below
            else:
                outcomes.append(checked)
        if todo:
            labels, probs = self._session.run(["label", "prob"], encode([t for _, t in todo]))
            for (pos, _), label, prob in zip(todo, labels, probs, strict=True):
                outcomes[pos] = _outputs(self._classes[int(label)], float(prob[label]))
        return outcomes

    def _check(self, tensor: np.ndarray[Any, Any]) -> bytes | Outcome:
        """The text to classify, or the outcome it gets without the graph."""
        raw = bytes(tensor.reshape(-1)[0])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return ValidationError(f"text is not UTF-8: {exc}")
        if self._max_chars is not None and len(text) > self._max_chars:
            return _too_long(len(text), self._max_chars)
        if not text.strip():
            return _outputs(UNDETERMINED.encode(), 0.0)
        return raw


def _too_long(chars: int, limit: int) -> ModelyardError:
    return PayloadTooLargeError(f"text has {chars} characters; the limit is {limit}")


def _outputs(language: bytes, probability: float) -> Outputs:
    lang = np.empty(1, dtype=object)
    lang[0] = language
    return {"language": lang, "probability": np.array([probability], dtype=np.float32)}
