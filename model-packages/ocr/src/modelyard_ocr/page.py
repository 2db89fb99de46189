"""Whole-page reading: orientation and skew corrected, then lines read block by block.

``PageReader`` wraps a ``PpOcr`` (detector + recogniser, unchanged) with the two page steps of
``ocr:3``: ``orient`` turns the page upright and level, ``layout`` orders its lines into blocks.
Detection runs once per page; its boxes are mapped onto the turned page rather than detected
again. Recognition pools the crops of every page of a batch, as ``PpOcr.read`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from modelyard.runtimes.onnx import OnnxSession

from modelyard_ocr.detect import Quad
from modelyard_ocr.layout import blocks_in_order, figure_rects
from modelyard_ocr.orient import (
    OrientParams,
    Turned,
    cls_preprocess,
    flip_vote,
    line_angles,
    skew_of,
    stands_upright,
    turn_page,
)
from modelyard_ocr.ppocr import PpOcr
from modelyard_ocr.recognize import Line, crop_quad

__all__ = ["PageReader", "PageText"]

Image = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class PageText:
    """A page's lines grouped in blocks, both in reading order, and the rotation applied."""

    blocks: list[list[Line]]
    angle: float  # degrees counter-clockwise the input was turned by to read it

    @property
    def lines(self) -> list[Line]:
        return [line for block in self.blocks for line in block]

    @property
    def text(self) -> str:
        """Lines joined by newlines, blocks separated by a blank line."""
        return "\n\n".join("\n".join(line.text for line in block) for block in self.blocks)


class PageReader:
    """``PpOcr`` plus the text-line direction classifier, orientation and layout steps."""

    def __init__(
        self,
        ocr: PpOcr,
        cls: OnnxSession,
        min_score: float,
        params: OrientParams = OrientParams(),  # noqa: B008  # frozen dataclass: a safe default
    ) -> None:
        self._ocr, self._cls = ocr, cls
        self._min_score, self._params = min_score, params

    def read(self, images: Sequence[Image]) -> list[PageText]:
        """Each page's text; recognition runs once over the crops of all pages."""
        laid_out = [self._lay_out(image) for image in images]
        crops = [crop for _, blocks in laid_out for block in blocks for crop in block]
        lines = iter(self._ocr.recognize(crops))
        pages = []
        for turned, blocks in laid_out:
            read = [[next(lines) for _ in block] for block in blocks]
            kept = [[line for line in block if self._keeps(line)] for block in read]
            pages.append(PageText([block for block in kept if block], turned.angle))
        return pages

    def _keeps(self, line: Line) -> bool:
        """As ``PpOcr.read``: empty and low-confidence lines are dropped."""
        return bool(line.text.strip()) and line.score >= self._min_score

    def _lay_out(self, image: Image) -> tuple[Turned, list[list[Image]]]:
        """The upright page and its line crops, grouped in blocks in reading order."""
        quads = self._ocr.detect(image)
        turned = self._upright(image, quads)
        upright = turned.quads(quads)
        blocks = blocks_in_order(upright, figure_rects(turned.image, upright))
        return turned, [[crop_quad(turned.image, upright[i]) for i in block] for block in blocks]

    def _upright(self, image: Image, quads: list[Quad]) -> Turned:
        """The page turned upright and level: boxes give side and skew, the vote up or down."""
        angles = line_angles(quads, self._params.long_aspect)
        turns = 1 if stands_upright(angles) else 0
        turned = turn_page(image, turns, skew_of(angles, self._params))
        if not quads or not self._flipped(turned, quads):
            return turned
        return turn_page(image, turns + 2, skew_of(angles, self._params))

    def _flipped(self, turned: Turned, quads: list[Quad]) -> bool:
        longest = sorted(turned.quads(quads), key=lambda q: -float(np.ptp(q[:, 0])))
        crops = [crop_quad(turned.image, q) for q in longest[: self._params.vote_lines]]
        return flip_vote(crops, self._p_flipped, self._confidence, self._params)

    def _p_flipped(self, crops: Sequence[Image]) -> np.ndarray[Any, Any]:
        """The classifier's probability that each crop is upside down."""
        outputs = self._cls.run({self._cls.input_specs()[0].name: cls_preprocess(crops)})
        return next(iter(outputs.values()))[:, 1]

    def _confidence(self, crops: Sequence[Image]) -> float:
        return float(np.mean([line.score for line in self._ocr.recognize(crops)]))
