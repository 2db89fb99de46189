"""PP-OCR text recognition (CTC) pre- and post-processing with numpy and cv2 only.

Each detected quad is cut out with a perspective warp, resized to height 48 keeping its aspect
ratio, and batched with crops of similar width (sorting by width keeps padding, and so wasted
compute, small). The recogniser emits per-step class probabilities; greedy CTC decoding takes
the best class per step, collapses repeats and drops the blank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from modelyard_ocr.detect import Quad

__all__ = [
    "REC_HEIGHT",
    "Line",
    "charset_from_text",
    "crop_quad",
    "ctc_decode",
    "rec_batches",
    "rec_preprocess",
    "rec_width",
]

REC_HEIGHT = 48  # fixed by the PP-OCR recognisers' input shape
_MAX_REC_WIDTH = 3200  # one line longer than ~66 aspect ratio is squeezed rather than padded
_VERTICAL_RATIO = 1.5  # crops this much taller than wide are rotated, as PaddleOCR does


@dataclass(frozen=True, slots=True)
class Line:
    """One recognised line of text and its mean character probability."""

    text: str
    score: float


def charset_from_text(text: str) -> list[str]:
    """CTC classes from a dictionary: blank, one entry per line, then the space PP-OCR appends."""
    entries = text.replace("\r\n", "\n").split("\n")  # not splitlines(): entries may be U+2028 etc.
    if entries and entries[-1] == "":
        entries.pop()
    return ["", *entries, " "]


def crop_quad(image: np.ndarray[Any, Any], quad: Quad) -> np.ndarray[Any, Any]:
    """The quad's content warped to an upright rectangle."""
    width = round(max(math.dist(quad[0], quad[1]), math.dist(quad[3], quad[2])))
    height = round(max(math.dist(quad[0], quad[3]), math.dist(quad[1], quad[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(
        image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if height / width >= _VERTICAL_RATIO:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def rec_width(crop: np.ndarray[Any, Any]) -> int:
    """Input width for a crop at height 48: ceil(48 * w / h), capped."""
    h, w = crop.shape[:2]
    return min(_MAX_REC_WIDTH, max(1, math.ceil(REC_HEIGHT * int(w) / int(h))))


def rec_batches(crops: Sequence[np.ndarray[Any, Any]], batch_size: int) -> list[list[int]]:
    """Crop indices grouped into batches of similar width (narrowest first)."""
    order = sorted(range(len(crops)), key=lambda i: rec_width(crops[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def rec_preprocess(crops: Sequence[np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """BGR crops -> float32 Nx3x48xW, scaled to [-1, 1], right-padded with zeros."""
    widths = [rec_width(c) for c in crops]
    batch = np.zeros((len(crops), 3, REC_HEIGHT, max(widths)), np.float32)
    for k, (crop, width) in enumerate(zip(crops, widths, strict=True)):
        resized = cv2.resize(crop, (width, REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
        batch[k, :, :, :width] = (resized.astype(np.float32) / 255.0 - 0.5).transpose(2, 0, 1) / 0.5
    return batch


def ctc_decode(probs: np.ndarray[Any, Any], charset: Sequence[str]) -> list[Line]:
    """Greedy CTC over NxTxC probabilities: best class per step, collapse repeats, drop blank."""
    best = probs.argmax(axis=2)
    best_p = probs.max(axis=2)
    lines = []
    for idx, p in zip(best, best_p, strict=True):
        keep = idx != 0
        keep[1:] &= idx[1:] != idx[:-1]
        text = "".join(charset[i] for i in idx[keep])
        score = float(p[keep].mean()) if keep.any() else 0.0
        lines.append(Line(text, score))
    return lines
