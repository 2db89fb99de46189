"""Reading order by recursive XY-cut over the detected line boxes of an upright page.

Recursive XY-cut (Nagy & Seth 1984; on bounding boxes as in Ha, Haralick & Phillips 1995): project
the boxes onto each axis, find the widest empty gap, cut there and recurse on both sides until no
gap is wide enough. Cuts down the page separate columns, read left to right; cuts across it
separate bands read top to bottom (a heading spanning the columns, the columns under it) and,
inside a column, paragraph, caption or text-beside-a-picture blocks. A column cut wins whenever
one qualifies: a gutter that runs the whole height of a region is the strongest layout signal,
while a band gap can be an accident (paragraph breaks that line up, or one column's break beside
another column's picture). A heading spanning the columns blocks the gutter, so it is cut off
first. Lines inside a block keep the line order of ``detect.reading_order`` (top to bottom,
boxes on one line left to right).

Pictures take part in the cuts as boxes of their own (ink left once the text boxes are blanked
out, in pieces larger than two line heights each way), as in XY-cut over all connected
components: otherwise the empty area of a picture in one column looks like a band gap across the
page, and a column's paragraph break beside it would cut the columns in two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from modelyard_ocr.detect import Quad, reading_order

__all__ = ["Gap", "Rect", "blocks_in_order", "figure_rects", "widest_gap"]

# Gaps are measured in median line heights, so the same settings hold at any resolution.
_MIN_ROW_GAP = 0.5  # line spacing leaves ~0.2 between boxes; a blank line leaves ~1.0
_MIN_COLUMN_GAP = 1.2  # word spaces are inside line boxes; gutters are ~2 heights wide
_MIN_FIGURE = 2.0  # a picture is larger than this each way; specks and rules are not

Gap = tuple[float, float]  # (width, position of its middle)
Rect = tuple[float, float, float, float]  # x0, y0, x1, y1


def blocks_in_order(quads: Sequence[Quad], figures: Sequence[Rect] = ()) -> list[list[int]]:
    """Indices of ``quads`` grouped into blocks, blocks and their lines in reading order.

    ``figures`` (pictures' rectangles) steer the cuts and are left out of the blocks.
    """
    if not quads:
        return []
    rects = [_rect(q) for q in quads] + list(figures)
    blocks = _cut(rects, list(range(len(rects))), line_height(quads))
    texts = [[i for i in block if i < len(quads)] for block in blocks]
    return [[b[i] for i in reading_order([quads[k] for k in b])] for b in texts if b]


def line_height(quads: Sequence[Quad]) -> float:
    """The median height of the line boxes: the unit every layout threshold is measured in."""
    return max(1.0, float(np.median([_rect(q)[3] - _rect(q)[1] for q in quads])))


def figure_rects(image: np.ndarray[Any, Any], quads: Sequence[Quad]) -> list[Rect]:
    """Rectangles of the ink that is not text and is larger than a line each way."""
    if not quads:
        return []
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    _, ink = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    cv2.fillPoly(ink, [q.round().astype(np.int32) for q in quads], 0)
    ink = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # scan speckles
    height = line_height(quads)
    size = max(3, round(height / 4))
    ink = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, np.ones((size, size), np.uint8))
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink)
    least = _MIN_FIGURE * height
    return [
        (float(x), float(y), float(x + w), float(y + h))
        for x, y, w, h, _ in stats[1:]  # label 0 is the background
        if w >= least and h >= least
    ]


def _rect(quad: Quad) -> Rect:
    x0, y0 = quad.min(axis=0)
    x1, y1 = quad.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _cut(rects: Sequence[Rect], members: list[int], height: float) -> list[list[int]]:
    """Blocks of ``members``: split at the widest qualifying gap, recursively."""
    rows = widest_gap([(rects[i][1], rects[i][3]) for i in members])
    columns = widest_gap([(rects[i][0], rects[i][2]) for i in members])
    row_ok = rows is not None and rows[0] >= _MIN_ROW_GAP * height
    column_ok = columns is not None and columns[0] >= _MIN_COLUMN_GAP * height
    if not (row_ok or column_ok):
        return [members]
    axis, gap = (0, columns) if column_ok else (1, rows)
    assert gap is not None  # for mypy: the chosen one qualified
    before = [i for i in members if rects[i][axis] < gap[1]]
    after = [i for i in members if rects[i][axis] >= gap[1]]
    return _cut(rects, before, height) + _cut(rects, after, height)


def widest_gap(spans: Sequence[tuple[float, float]]) -> Gap | None:
    """The widest stretch of the axis that no span covers, between the first and last span."""
    best: Gap | None = None
    reach = -np.inf
    for start, end in sorted(spans):
        if reach > -np.inf and start > reach and (best is None or start - reach > best[0]):
            best = (start - reach, (start + reach) / 2)
        reach = max(reach, end)
    return best
