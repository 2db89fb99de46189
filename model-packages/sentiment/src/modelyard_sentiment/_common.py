"""What both sentiment versions share: the text check and the output tensors.

Both versions take ``text`` (BYTES [1], UTF-8) and answer ``label`` (BYTES [1]: negative,
neutral or positive) and ``scores`` (FP32 [3], in that class order), so a canary or a rollback
between them changes nothing downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from modelyard.errors import PayloadTooLargeError, ValidationError
from modelyard.model import Inputs, Outcome, Outputs

from modelyard_sentiment.data import LABELS

__all__ = ["check_texts", "outputs"]


def check_texts(batch: Sequence[Inputs], max_chars: int | None) -> list[str | Outcome]:
    """Per request: its decoded text, or the error it fails with on its own."""
    return [_check(inputs["text"], max_chars) for inputs in batch]


def _check(tensor: np.ndarray[Any, Any], max_chars: int | None) -> str | Outcome:
    try:
        text = bytes(tensor.reshape(-1)[0]).decode("utf-8")
    except UnicodeDecodeError as exc:
        return ValidationError(f"text is not UTF-8: {exc}")
    if max_chars is not None and len(text) > max_chars:
        return PayloadTooLargeError(f"text has {len(text)} characters; the limit is {max_chars}")
    return text


def outputs(label: int, scores: Sequence[float]) -> Outputs:
    """The output tensors for class index ``label`` and per-class ``scores``."""
    name = np.empty(1, dtype=object)
    name[0] = LABELS[label].encode()
    return {"label": name, "scores": np.asarray(scores, dtype=np.float32).reshape(3)}
