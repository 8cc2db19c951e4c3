"""The review flags of whole cuts, with the shipped model, on the benchmark's composites and a real photo.

What a seller would notice: a wrong cut comes back flagged, a good one does not. About one to three
seconds of model time per test.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import skimage.data

from generation.engine.cut import cut_product
from generation.engine.saliency import Segmenter, get_segmenter

from .test_engine_cut import _set_sample


@pytest.fixture(scope="module")
def model() -> Segmenter:
    return get_segmenter("auto")


def _iou(matte: np.ndarray, truth: np.ndarray) -> float:
    p, t = matte >= 0.5, truth >= 0.5
    return float((p & t).sum() / max((p | t).sum(), 1))


def test_a_stethoscope_whose_loops_are_filled_with_plain_paper_is_flagged(model: Segmenter, tmp_path: Any) -> None:
    # Seed 5: the model fills both loops of the tubing with the paper behind them and is sure of it
    # (IoU 0.46, no flag before). The paper has no texture; the dark tube walling it tells it apart.
    photo, truth = _set_sample(tmp_path, "stethoscope-paper", 5)
    cut = cut_product(photo, None, segmenter=model)
    assert cut.needs_review and "backdrop_inside" in {r.code for r in cut.review_reasons}
    assert cut.confidence < 0.5


def test_a_cut_the_closer_look_disagrees_with_is_flagged(model: Segmenter, tmp_path: Any) -> None:
    # Seed 7: the first look fills the loop of the ear tubes with paper (IoU 0.61); the closer look at
    # the product's box leaves it out, keeps under 85 % of the first cut, and is not taken. The two
    # looks disagree about what the product is: the cut is flagged, not told "passed".
    photo, truth = _set_sample(tmp_path, "stethoscope-paper", 7)
    cut = cut_product(photo, None, segmenter=model)
    assert _iou(cut.matte, truth) < 0.85
    assert cut.needs_review and "looks_disagree" in {r.code for r in cut.review_reasons}


def test_a_cup_of_coffee_on_a_wood_table_is_not_flagged(model: Segmenter) -> None:
    # The crema has the table's colour and is walled by white porcelain, but it is smooth and the wood
    # has grain: not the backdrop seen through a gap (the variant that counted any smooth walled patch
    # flagged this good cut and its larger look then lost half of the cup and saucer).
    cut = cut_product(skimage.data.coffee(), None, segmenter=model)
    assert not cut.needs_review, cut.review_reasons
    assert 0.40 < float((cut.matte >= 0.5).mean()) < 0.55


def test_a_cut_that_is_one_pebble_of_the_backdrop_is_flagged(model: Segmenter, tmp_path: Any) -> None:
    # Unseen catalogue, seed 10: the model is sure of one pebble of the gravel instead of the pipe
    # wrench (IoU 0.000, no flag before). The mask moved elsewhere covers gravel just as like it.
    photo, truth = _set_sample(tmp_path, "pipe-wrench", 10, "unseen")
    cut = cut_product(photo, None, segmenter=model)
    assert _iou(cut.matte, truth) < 0.85
    assert cut.needs_review and "backdrop_piece" in {r.code for r in cut.review_reasons}
    assert cut.confidence < 0.5


def test_a_tennis_ball_on_gravel_is_not_taken_for_a_pebble(model: Segmenter, tmp_path: Any) -> None:
    # A small product on the same kind of backdrop, cut well (IoU 0.98 on seed 0): its colour is not
    # the gravel's, so no copy of its mask elsewhere looks like it.
    photo, truth = _set_sample(tmp_path, "tennis-ball-gravel", 0)
    cut = cut_product(photo, None, segmenter=model)
    assert _iou(cut.matte, truth) >= 0.95
    assert "backdrop_piece" not in {r.code for r in cut.review_reasons}


def test_a_bass_guitar_whose_neck_the_cut_left_out_is_flagged(model: Segmenter, tmp_path: Any) -> None:
    # Unseen catalogue, seed 13: the wooden neck on bark is under the model's 0.5 line (IoU 0.766,
    # 0.22 of the guitar missed, no flag before), but the model half-saw it. A flag only: the cut
    # stays as it was.
    photo, truth = _set_sample(tmp_path, "bass-guitar", 13, "unseen")
    cut = cut_product(photo, None, segmenter=model)
    assert _iou(cut.matte, truth) < 0.85
    assert cut.needs_review and "part_left_out" in {r.code for r in cut.review_reasons}
    assert cut.confidence < 0.5


def test_a_cello_cut_whole_is_not_flagged_as_missing_a_part(model: Segmenter, tmp_path: Any) -> None:
    # Unseen catalogue, seed 11: a good cut (IoU 0.968) with the most model belief beyond its outline
    # of the development seeds' good cuts (0.013, under the reason's 0.03).
    photo, truth = _set_sample(tmp_path, "cello", 11, "unseen")
    cut = cut_product(photo, None, segmenter=model)
    assert _iou(cut.matte, truth) >= 0.95
    assert "part_left_out" not in {r.code for r in cut.review_reasons}


def test_a_tricycle_whose_frame_is_filled_with_the_sand_is_flagged(model: Segmenter, tmp_path: Any) -> None:
    # Unseen catalogue, seed 2: the cut bridges the gaps of the frame with the grey sand behind them
    # (IoU 0.816, no flag before); those patches open onto the outline, so nothing encloses them, but
    # moved elsewhere on the sand they match it as closely as the sand matches itself. A flag only.
    photo, truth = _set_sample(tmp_path, "tricycle", 2, "unseen")
    cut = cut_product(photo, None, segmenter=model)
    assert _iou(cut.matte, truth) < 0.85
    assert cut.needs_review and "gap_filled" in {r.code for r in cut.review_reasons}
    assert cut.confidence < 0.5


def test_a_ginger_on_a_shelf_is_not_taken_for_a_filled_gap(model: Segmenter, tmp_path: Any) -> None:
    # Seed 3: a good cut (IoU 0.990) whose skin has the shelf's colours and grain in five small
    # patches (1-3.4 % of the cut each, 0.094 in all with no size floor); judged from 3 % of the cut
    # it measures 0.034, under the reason's 0.08.
    photo, truth = _set_sample(tmp_path, "ginger-shelf", 3)
    cut = cut_product(photo, None, segmenter=model)
    assert _iou(cut.matte, truth) >= 0.95
    assert "gap_filled" not in {r.code for r in cut.review_reasons}
