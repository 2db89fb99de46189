"""Page orientation (0/90/180/270) and small skew, from the detected line boxes and a classifier.

The detector finds text lines at any angle, so its boxes already tell most of the story: when
most long boxes stand upright the page lies on its side (90 or 270), and the median angle of
their long edges, folded into ±45°, is the skew. What boxes cannot tell is up from down; that is
the 0°/180° text-line classifier's job (PP-OCR's ``ch_ppocr_mobile_v2.0_cls``), voted over the
page's longest lines. When the vote is close, recognition confidence breaks the tie: the
recogniser reads a few lines both ways up and the reading it is surer of wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from modelyard_ocr.detect import Quad, order_points

__all__ = [
    "OrientParams",
    "Turned",
    "cls_preprocess",
    "flip_vote",
    "line_angles",
    "skew_of",
    "stands_upright",
    "turn_page",
]

Image = np.ndarray[Any, Any]
Matrix = np.ndarray[Any, np.dtype[np.float64]]  # 2x3 affine, page -> turned page
_CLS_SHAPE = (48, 192)  # the classifier's fixed input height and width


@dataclass(frozen=True, slots=True)
class OrientParams:
    """Orientation settings (manifest ``parameters.orient_params``)."""

    long_aspect: float = 2.5  # boxes at least this long for their height show a direction
    min_skew: float = 0.5  # degrees; smaller skews are left alone (recognition copes)
    max_skew: float = 15.0  # degrees; a larger median angle is not a skew, and is ignored
    vote_lines: int = 12  # longest lines the classifier votes over
    vote_margin: float = 0.25  # |mean p(180) - 0.5| under this is a tie, for recognition to break
    tie_lines: int = 4  # lines read both ways up to break a tie


@dataclass(frozen=True, slots=True)
class Turned:
    """A page after rotation, the matrix that took original coordinates there, and the angle."""

    image: Image
    matrix: Matrix
    angle: float  # degrees counter-clockwise applied to the input, in (-180, 180]

    def quads(self, quads: Sequence[Quad]) -> list[Quad]:
        """``quads`` (original coordinates) mapped onto the turned page."""
        out = []
        for quad in quads:
            moved = quad.astype(np.float64) @ self.matrix[:, :2].T + self.matrix[:, 2]
            out.append(order_points(moved))
        return out


def line_angles(quads: Sequence[Quad], long_aspect: float) -> list[float]:
    """Angle of each long box's long edge, in degrees in [0, 180), image coordinates (y down)."""
    angles = []
    for quad in quads:
        top, side = quad[1] - quad[0], quad[3] - quad[0]
        length, thickness = np.hypot(*top), np.hypot(*side)
        edge = top if length >= thickness else side
        if max(length, thickness) >= long_aspect * max(min(length, thickness), 1.0):
            angles.append(math.degrees(math.atan2(float(edge[1]), float(edge[0]))) % 180.0)
    return angles


def stands_upright(angles: Sequence[float]) -> bool:
    """True when most long lines run up and down the page: it lies on its side."""
    upright = sum(45.0 <= a < 135.0 for a in angles)
    return upright > len(angles) / 2


def skew_of(angles: Sequence[float], params: OrientParams) -> float:
    """The rotation (degrees counter-clockwise) that levels the lines; 0 when too small/large."""
    if not angles:
        return 0.0
    folded = [(a + 45.0) % 90.0 - 45.0 for a in angles]  # 0, 90 and 180 are all "level"
    skew = float(np.median(folded))
    # image y points down: a line rising to the right has a negative angle, and turning the
    # page by that same (negative, i.e. clockwise) angle levels it
    return skew if params.min_skew <= abs(skew) <= params.max_skew else 0.0


def turn_page(image: Image, quarter_turns: int, skew: float) -> Turned:
    """``image`` turned counter-clockwise by quarter turns (exact), then by ``skew`` degrees."""
    h, w = image.shape[:2]
    turns = quarter_turns % 4
    matrix = _quarter_matrix(turns, w, h)
    if turns:
        image = cv2.rotate(image, _CV_TURNS[turns])
    if skew:
        image, skew_matrix = _rotate_expanded(image, skew)
        matrix = _compose(skew_matrix, matrix)
    return Turned(np.ascontiguousarray(image), matrix, _normalise(90.0 * turns + skew))


_CV_TURNS = {
    1: cv2.ROTATE_90_COUNTERCLOCKWISE,
    2: cv2.ROTATE_180,
    3: cv2.ROTATE_90_CLOCKWISE,
}


def _quarter_matrix(turns: int, w: int, h: int) -> Matrix:
    """The pixel mapping ``cv2.rotate`` applies for ``turns`` counter-clockwise quarter turns."""
    rows = {
        0: [[1, 0, 0], [0, 1, 0]],
        1: [[0, 1, 0], [-1, 0, w - 1]],
        2: [[-1, 0, w - 1], [0, -1, h - 1]],
        3: [[0, -1, h - 1], [1, 0, 0]],
    }
    return np.array(rows[turns], np.float64)


def _rotate_expanded(image: Image, degrees: float) -> tuple[Image, Matrix]:
    """Rotate about the centre onto a canvas large enough to keep every corner."""
    h, w = image.shape[:2]
    matrix: Matrix = np.asarray(
        cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0), np.float64
    )
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    nw, nh = math.ceil(w * cos + h * sin), math.ceil(w * sin + h * cos)
    matrix[0, 2] += nw / 2.0 - w / 2.0
    matrix[1, 2] += nh / 2.0 - h / 2.0
    # replicate the border: paper colour continues, where a constant would draw a frame
    rotated = cv2.warpAffine(
        image, matrix, (nw, nh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    return np.asarray(rotated), matrix


def _compose(second: Matrix, first: Matrix) -> Matrix:
    """The affine map doing ``first`` then ``second``."""
    return second[:, :2] @ first + np.hstack([np.zeros((2, 2)), second[:, 2:]])


def _normalise(degrees: float) -> float:
    folded = degrees % 360.0
    return folded - 360.0 if folded > 180.0 else folded


def cls_preprocess(crops: Sequence[Image]) -> np.ndarray[Any, Any]:
    """BGR line crops -> float32 Nx3x48x192, aspect kept up to 192 wide, right-padded with 0."""
    height, width = _CLS_SHAPE
    batch = np.zeros((len(crops), 3, height, width), np.float32)
    for k, crop in enumerate(crops):
        h, w = crop.shape[:2]
        fit = min(width, max(1, math.ceil(height * w / max(h, 1))))
        resized = cv2.resize(crop, (fit, height), interpolation=cv2.INTER_LINEAR)
        batch[k, :, :, :fit] = (resized.astype(np.float32) / 255.0 - 0.5).transpose(2, 0, 1) / 0.5
    return batch


def flip_vote(
    crops: Sequence[Image],
    p_flipped: Callable[[Sequence[Image]], np.ndarray[Any, Any]],
    confidence: Callable[[Sequence[Image]], float],
    params: OrientParams,
) -> bool:
    """Whether the page reads upside down: the classifier's length-weighted vote over the
    lines, or, when that is within ``vote_margin`` of a tie, the surer recognition."""
    if not crops:
        return False
    weights = np.array([c.shape[1] for c in crops], np.float64)
    vote = float(np.average(p_flipped(crops), weights=weights))
    if abs(vote - 0.5) >= params.vote_margin:
        return vote > 0.5
    sample = sorted(crops, key=lambda c: -c.shape[1])[: params.tie_lines]
    return confidence([np.rot90(c, 2) for c in sample]) > confidence(sample)
