"""XY-cut reading order and the orientation geometry of ``modelyard_ocr``, on synthetic boxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import pytest
from modelyard_ocr.detect import order_points
from modelyard_ocr.layout import blocks_in_order, figure_rects, widest_gap
from modelyard_ocr.orient import (
    OrientParams,
    flip_vote,
    line_angles,
    skew_of,
    stands_upright,
    turn_page,
)

H = 30  # line height of the synthetic pages


def box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray[Any, Any]:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def column(x: float, y: float, lines: int, gap_after: int | None = None) -> list[Any]:
    """Line boxes 300 wide, 36 px apart; a blank line after line ``gap_after``."""
    out, top = [], y
    for k in range(lines):
        out.append(box(x, top, x + 300, top + H))
        top += 36 + (36 if k == gap_after else 0)
    return out


def test_widest_gap_is_between_spans() -> None:
    assert widest_gap([(0, 10), (12, 20), (50, 60), (5, 11)]) == (30, 35)
    assert widest_gap([(0, 10), (5, 20)]) is None
    assert widest_gap([]) is None


def test_heading_then_columns_left_to_right_with_paragraphs() -> None:
    heading = [box(0, 0, 700, 40)]
    left, right = column(0, 80, 5, gap_after=1), column(380, 80, 4)
    quads = heading + right + left  # detection order is arbitrary
    blocks = blocks_in_order(quads)
    ids = {id(q): k for k, q in enumerate(quads)}
    named = [[ids[id(q)] for q in group] for group in ([heading[0]], left[:2], left[2:], right)]
    assert blocks == named


def test_a_picture_keeps_a_paragraph_break_beside_it_from_cutting_the_columns() -> None:
    heading = [box(0, 0, 700, 40)]
    caption = [box(0, 280, 300, 300)]
    left = column(0, 340, 3)
    right = column(380, 80, 3) + column(380, 260, 4)  # a break level with the picture
    picture = (0.0, 80.0, 300.0, 270.0)
    quads = heading + caption + left + right
    without = blocks_in_order(quads)
    with_picture = blocks_in_order(quads, [picture])
    first_right = len(heading + caption + left)
    assert with_picture == [
        [0],
        [1],
        [2, 3, 4],
        list(range(first_right, first_right + 3)),
        list(range(first_right + 3, len(quads))),
    ]
    assert without != with_picture  # the empty picture area reads as a band gap


def test_figure_rects_find_a_picture_but_not_text() -> None:
    page = np.full((400, 800, 3), 255, np.uint8)
    cv2.rectangle(page, (20, 100), (300, 300), (90, 90, 90), 3)
    cv2.putText(page, "some text here", (400, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    text = [box(390, 30, 660, 70)]
    (x0, y0, x1, y1), *rest = figure_rects(page, text)
    assert not rest
    assert (x0, y0, x1, y1) == pytest.approx((19, 99, 302, 302), abs=3)


def test_turn_page_maps_boxes_where_the_pixels_went() -> None:
    image = np.full((100, 200, 3), 255, np.uint8)
    image[10:20, 30:90] = 0  # a "line" at x 30..89, y 10..19
    quad = box(30, 10, 89, 19)
    for turns in range(4):
        for skew in (0.0, 4.0):
            turned = turn_page(image, turns, skew)
            (moved,) = turned.quads([quad])
            x0, y0 = np.floor(moved.min(axis=0)).astype(int)
            x1, y1 = np.ceil(moved.max(axis=0)).astype(int)
            inside = turned.image[y0 : y1 + 1, x0 : x1 + 1, 0] < 128
            assert inside.sum() >= 0.9 * (turned.image[..., 0] < 128).sum()


def test_angle_is_reported_in_half_open_range() -> None:
    image = np.zeros((10, 20, 3), np.uint8)
    assert [turn_page(image, t, 0.0).angle for t in range(4)] == [0.0, 90.0, 180.0, -90.0]
    assert turn_page(image, 3, -3.0).angle == pytest.approx(-93.0)


def test_upright_lines_and_skew_come_from_long_boxes() -> None:
    params = OrientParams()
    level = [box(0, 0, 300, 30), box(0, 40, 20, 60)]  # the second box is too short to count
    assert line_angles(level, params.long_aspect) == [0.0]
    rotated = cv2.boxPoints(((100, 100), (300, 30), -4.0)).astype(np.float32)
    angles = line_angles([order_points(rotated)], params.long_aspect)
    assert skew_of(angles, params) == pytest.approx(-4.0, abs=0.01)
    assert not stands_upright(angles)
    assert stands_upright(line_angles([box(0, 0, 30, 300)], params.long_aspect))
    assert skew_of([0.2], params) == 0.0  # too small to resample the page for


def crops(n: int) -> list[np.ndarray[Any, Any]]:
    return [np.zeros((48, 200 + k, 3), np.uint8) for k in range(n)]


def test_flip_vote_decides_clear_votes_alone() -> None:
    def no_rec(_: Sequence[Any]) -> float:
        raise AssertionError("recognition is only the tie-breaker")

    params = OrientParams()
    assert flip_vote(crops(3), lambda c: np.full(len(c), 0.95), no_rec, params)
    assert not flip_vote(crops(3), lambda c: np.full(len(c), 0.05), no_rec, params)
    assert not flip_vote([], lambda c: np.ones(len(c)), no_rec, params)


def test_recognition_confidence_breaks_a_tie() -> None:
    params = OrientParams()
    marked = crops(5)
    for c in marked:
        c[0, 0] = 255  # recognisable "upright" mark: top-left pixel

    def confidence(sample: Sequence[np.ndarray[Any, Any]]) -> float:
        assert len(sample) == params.tie_lines
        return float(np.mean([c[0, 0, 0] == 255 for c in sample]))

    assert not flip_vote(marked, lambda c: np.full(len(c), 0.55), confidence, params)
    flipped = [np.rot90(c, 2) for c in marked]
    assert flip_vote(flipped, lambda c: np.full(len(c), 0.45), confidence, params)
