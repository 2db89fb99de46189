"""PP-OCR text detection (DB) pre- and post-processing with numpy and cv2 only.

The detector outputs a per-pixel text probability map. We threshold it, grow each blob into a
rotated rectangle ("unclip": DB shrinks text regions during training, so boxes must be grown
back), map the rectangles to the original image and sort them into reading order. For
rectangles unclip is exact without pyclipper: each side moves out by ``d = area * r / perimeter``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DetParams",
    "Quad",
    "box_score",
    "boxes_from_map",
    "det_preprocess",
    "order_points",
    "reading_order",
    "unclip_rect",
]

Quad = np.ndarray[Any, np.dtype[np.float32]]  # 4x2 corners: top-left, top-right, bottom-right, bl
FloatImage = np.ndarray[Any, np.dtype[np.float32]]
RotatedRect = tuple[tuple[float, float], tuple[float, float], float]

_MIN_SIDE = 3  # boxes thinner than this (in map pixels) are noise
_MAX_CANDIDATES = 1000


@dataclass(frozen=True, slots=True)
class DetParams:
    """Detector settings; the defaults are those measured best for PP-OCRv6 (docs/models/ocr.md)."""

    limit_side: int = 960  # longest side fed to the detector; larger images are downscaled
    thresh: float = 0.2  # probability above which a pixel is text
    box_thresh: float = 0.45  # mean probability under which a box is dropped
    unclip_ratio: float = 1.6  # PP-OCRv6's own config says 1.4; 1.6 kept full stops (ocr.md)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet, on BGR as Paddle does
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


def det_preprocess(image: np.ndarray[Any, Any], params: DetParams) -> FloatImage:
    """BGR uint8 HxWx3 -> float32 1x3xH'xW' with H', W' multiples of 32 (never upscaled)."""
    h, w = image.shape[:2]
    scale = min(1.0, params.limit_side / max(h, w))  # upscaling small text made things worse
    rh = max(32, round(h * scale / 32) * 32)
    rw = max(32, round(w * scale / 32) * 32)
    resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_LINEAR)
    mean, std = np.array(params.mean, np.float32), np.array(params.std, np.float32)
    x = (resized.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def boxes_from_map(prob: FloatImage, image_hw: tuple[int, int], params: DetParams) -> list[Quad]:
    """Text quads in original-image coordinates from one HxW probability map."""
    binary = (prob > params.thresh).astype(np.uint8)
    mask = cv2.dilate(binary, np.ones((2, 2), np.uint8))  # joins characters split by 1px gaps
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    sy, sx = image_hw[0] / prob.shape[0], image_hw[1] / prob.shape[1]
    quads = []
    for contour in contours[:_MAX_CANDIDATES]:
        quad = _contour_to_quad(contour, prob, params)
        if quad is not None:
            quad[:, 0] = np.clip(quad[:, 0] * sx, 0, image_hw[1] - 1)
            quad[:, 1] = np.clip(quad[:, 1] * sy, 0, image_hw[0] - 1)
            quads.append(quad)
    return quads


def _contour_to_quad(contour: Any, prob: FloatImage, params: DetParams) -> Quad | None:
    (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
    rect: RotatedRect = ((cx, cy), (w, h), angle)
    if min(rect[1]) < _MIN_SIDE:
        return None
    if box_score(prob, order_points(cv2.boxPoints(rect))) < params.box_thresh:
        return None
    grown = unclip_rect(rect, params.unclip_ratio)
    if min(grown[1]) < _MIN_SIDE + 2:
        return None
    return order_points(cv2.boxPoints(grown))


def box_score(prob: FloatImage, quad: Quad) -> float:
    """Mean probability inside ``quad`` (DB's "fast" score)."""
    h, w = prob.shape
    x0, x1 = (np.clip([quad[:, 0].min(), quad[:, 0].max()], 0, w - 1)).astype(int)
    y0, y1 = (np.clip([quad[:, 1].min(), quad[:, 1].max()], 0, h - 1)).astype(int)
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    shifted = (quad - np.array([x0, y0], np.float32)).round().astype(np.int32)
    cv2.fillPoly(mask, [shifted], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def unclip_rect(rect: RotatedRect, ratio: float) -> RotatedRect:
    """Grow a rotated rectangle on every side by ``area * ratio / perimeter``."""
    (cx, cy), (w, h), angle = rect
    perimeter = 2.0 * (w + h)
    d = w * h * ratio / perimeter if perimeter > 0 else 0.0
    return (cx, cy), (w + 2 * d, h + 2 * d), angle


def order_points(points: np.ndarray[Any, Any]) -> Quad:
    """Four corners as top-left, top-right, bottom-right, bottom-left."""
    pts = np.asarray(points, np.float32)
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1], kind="stable")]
    tr, br = right[np.argsort(right[:, 1], kind="stable")]
    return np.stack([tl, tr, br, bl]).astype(np.float32)


def reading_order(quads: list[Quad]) -> list[int]:
    """Indices of ``quads`` top-to-bottom, then left-to-right within each line.

    Boxes belong to the same line when their vertical centre lies within half a median box
    height of the line's centre, which tolerates the slight skew of scanned pages.
    """
    if not quads:
        return []
    centres = [float(q[:, 1].mean()) for q in quads]
    heights = [_height(q) for q in quads]
    tolerance = 0.5 * float(np.median(heights))
    lines: list[list[int]] = []
    for i in sorted(range(len(quads)), key=lambda k: centres[k]):
        if lines and abs(centres[i] - np.mean([centres[j] for j in lines[-1]])) <= tolerance:
            lines[-1].append(i)
        else:
            lines.append([i])
    return [i for line in lines for i in sorted(line, key=lambda k: float(quads[k][:, 0].min()))]


def _height(quad: Quad) -> float:
    return max(math.dist(quad[0], quad[3]), math.dist(quad[1], quad[2]), 1.0)
