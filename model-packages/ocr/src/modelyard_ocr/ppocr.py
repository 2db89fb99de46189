"""The PP-OCR pipeline: detect lines per image, recognise all crops of a batch together.

Transport-neutral and free of modelyard types, so it can be benchmarked and tested on its own.
Detection runs per image (sizes differ); recognition pools the crops of every image in the
batch and runs them in width-sorted batches, which is what makes GPU batching pay off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from modelyard.runtimes.onnx import OnnxSession

from modelyard_ocr.detect import DetParams, Quad, boxes_from_map, det_preprocess, reading_order
from modelyard_ocr.recognize import Line, crop_quad, ctc_decode, rec_batches, rec_preprocess

__all__ = ["PpOcr", "RecParams"]


@dataclass(frozen=True, slots=True)
class RecParams:
    """Recogniser settings."""

    batch_size: int = 1  # crops per recogniser call on CPU, where padding costs more than it saves
    gpu_batch_size: int = 32  # on GPU: crops are width-sorted, so padding stays small
    min_score: float = 0.5  # lines whose mean character probability is lower are dropped


class PpOcr:
    """Detector + recogniser sessions and the charset that maps recogniser classes to text."""

    def __init__(
        self,
        det: OnnxSession,
        rec: OnnxSession,
        charset: Sequence[str],
        det_params: DetParams = DetParams(),  # noqa: B008  # frozen dataclass: a safe default
        rec_params: RecParams = RecParams(),
    ) -> None:
        self._det, self._rec = det, rec
        self._charset = list(charset)
        self._det_params, self._rec_params = det_params, rec_params
        on_gpu = "CUDAExecutionProvider" in rec.providers
        self._rec_batch = rec_params.gpu_batch_size if on_gpu else rec_params.batch_size

    def read(self, images: Sequence[np.ndarray[Any, Any]]) -> list[list[Line]]:
        """Lines in reading order for each BGR image (low-confidence lines dropped)."""
        crops: list[np.ndarray[Any, Any]] = []
        owners: list[int] = []
        for n, image in enumerate(images):
            for quad in self.detect(image):
                crops.append(crop_quad(image, quad))
                owners.append(n)
        lines = self.recognize(crops)
        out: list[list[Line]] = [[] for _ in images]
        for owner, line in zip(owners, lines, strict=True):
            if line.text.strip() and line.score >= self._rec_params.min_score:
                out[owner].append(line)
        return out

    def detect(self, image: np.ndarray[Any, Any]) -> list[Quad]:
        """Text quads of one image, in reading order."""
        x = det_preprocess(image, self._det_params)
        prob = _first(self._det.run({self._det.input_specs()[0].name: x}))[0, 0]
        quads = boxes_from_map(prob, image.shape[:2], self._det_params)
        return [quads[i] for i in reading_order(quads)]

    def recognize(self, crops: Sequence[np.ndarray[Any, Any]]) -> list[Line]:
        """One line per crop, in the crops' order."""
        lines: list[Line | None] = [None] * len(crops)
        name = self._rec.input_specs()[0].name
        for batch in rec_batches(crops, self._rec_batch):
            probs = _first(self._rec.run({name: rec_preprocess([crops[i] for i in batch])}))
            for i, line in zip(batch, ctc_decode(probs, self._charset), strict=True):
                lines[i] = line
        return [line for line in lines if line is not None]


def _first(outputs: dict[str, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """The single output of a PP-OCR graph (its name differs between model releases)."""
    return next(iter(outputs.values()))
