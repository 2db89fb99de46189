"""PP-OCR pre/post-processing on synthetic arrays: no model files, no I/O."""

from __future__ import annotations

import math

import numpy as np
import pytest
from modelyard_ocr.corpus import CORPUS, LANGUAGES, SENTIMENT
from modelyard_ocr.detect import (
    DetParams,
    boxes_from_map,
    det_preprocess,
    order_points,
    reading_order,
    unclip_rect,
)
from modelyard_ocr.metrics import cer, edit_distance
from modelyard_ocr.recognize import (
    REC_HEIGHT,
    charset_from_text,
    ctc_decode,
    rec_batches,
    rec_preprocess,
)

CHARSET = charset_from_text("a\nb\nc\n")  # ["", "a", "b", "c", " "]


def one_hot_steps(indices: list[int], classes: int = 5, p: float = 0.9) -> np.ndarray:
    probs = np.full((1, len(indices), classes), (1 - p) / (classes - 1), np.float32)
    probs[0, np.arange(len(indices)), indices] = p
    return probs


def quad(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def test_charset_is_blank_dict_space_and_tolerates_crlf() -> None:
    assert CHARSET == ["", "a", "b", "c", " "]
    assert charset_from_text("a\r\nb\r\n") == ["", "a", "b", " "]
    assert charset_from_text("x\u2028y") == ["", "x\u2028y", " "]  # only \n separates entries


def test_ctc_collapses_repeats_and_drops_blanks() -> None:
    # a a _ a b b _ _ c <space> c  ->  "aab c c"... repeats merge only when adjacent
    lines = ctc_decode(one_hot_steps([1, 1, 0, 1, 2, 2, 0, 0, 3, 4, 3]), CHARSET)
    assert lines[0].text == "aabc c"
    assert lines[0].score == pytest.approx(0.9)


def test_ctc_all_blank_is_empty_with_zero_score() -> None:
    line = ctc_decode(one_hot_steps([0, 0, 0]), CHARSET)[0]
    assert (line.text, line.score) == ("", 0.0)


def test_ctc_decodes_each_item_of_a_batch() -> None:
    batch = np.concatenate([one_hot_steps([1, 0, 2]), one_hot_steps([3, 3, 3])])
    assert [line.text for line in ctc_decode(batch, CHARSET)] == ["ab", "c"]


def test_unclip_grows_each_side_by_area_ratio_over_perimeter() -> None:
    (cx, cy), (w, h), angle = unclip_rect(((50.0, 20.0), (100.0, 10.0), 3.0), 1.6)
    d = 100 * 10 * 1.6 / 220
    assert (cx, cy, angle) == (50.0, 20.0, 3.0)
    assert (w, h) == pytest.approx((100 + 2 * d, 10 + 2 * d))


def test_order_points_starts_top_left_clockwise() -> None:
    shuffled = np.array([[10, 5], [0, 0], [0, 5], [10, 0]], np.float32)
    assert order_points(shuffled).tolist() == quad(0, 0, 10, 5).tolist()


def test_reading_order_groups_skewed_lines_then_sorts_left_to_right() -> None:
    boxes = [
        quad(300, 62, 400, 92),  # line 2, right (slightly lower: skew)
        quad(10, 10, 120, 40),  # line 1, left
        quad(10, 60, 200, 90),  # line 2, left
        quad(150, 13, 280, 43),  # line 1, right
        quad(10, 110, 90, 140),  # line 3
    ]
    assert reading_order(boxes) == [1, 3, 2, 0, 4]
    assert reading_order([]) == []


def test_det_preprocess_rounds_to_32_and_never_upscales() -> None:
    small = det_preprocess(np.zeros((100, 250, 3), np.uint8), DetParams())
    assert small.shape == (1, 3, 96, 256)
    big = det_preprocess(np.zeros((1000, 3000, 3), np.uint8), DetParams(limit_side=960))
    assert big.shape == (1, 3, 320, 960)
    assert big.dtype == np.float32


def test_boxes_from_map_finds_text_blobs_scales_them_and_drops_weak_ones() -> None:
    prob = np.zeros((64, 128), np.float32)
    prob[10:20, 10:60] = 0.9  # a word
    prob[40:50, 20:100] = 0.8  # another line
    prob[30:34, 100:120] = 0.3  # above the pixel threshold, below the box threshold
    quads = boxes_from_map(prob, (128, 256), DetParams())  # image is 2x the map
    assert len(quads) == 2
    ordered = [quads[i] for i in reading_order(quads)]
    # blob 50x10 grown by d = 500 * 1.6 / 120 on each side, then scaled 2x (±2 px: dilation)
    d = 500 * 1.6 / 120
    expected = quad(2 * (10 - d), 2 * (10 - d), 2 * (60 + d), 2 * (20 + d))
    np.testing.assert_allclose(ordered[0], expected, atol=2.5)
    assert ordered[1][0, 1] > ordered[0][0, 1]


def test_rec_batches_sort_by_width_and_preprocess_pads() -> None:
    crops = [np.zeros((24, w, 3), np.uint8) for w in (100, 20, 60)]
    assert rec_batches(crops, 2) == [[1, 2], [0]]
    batch = rec_preprocess([np.full((24, 10, 3), 255, np.uint8), np.zeros((24, 30, 3), np.uint8)])
    assert batch.shape == (2, 3, REC_HEIGHT, math.ceil(REC_HEIGHT * 30 / 24))
    assert batch[0, :, :, :20].min() == 1.0  # white -> 1
    assert batch[0, :, :, 20:].max() == 0.0  # zero padding
    assert batch[1].min() == -1.0  # black -> -1


def test_cer_normalises_whitespace() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert cer([("hello\nworld", "hello world")]) == 0.0
    assert cer([("helo", "hello"), ("", "abcde")]) == pytest.approx(6 / 10)


def test_corpus_is_parallel_across_languages() -> None:
    assert tuple(CORPUS) == LANGUAGES
    assert {len(sentences) for sentences in CORPUS.values()} == {len(SENTIMENT)}
    assert all("¡" not in s for sentences in CORPUS.values() for s in sentences)
