"""The review signals on their own: masks drawn on synthetic photos, no model."""
from __future__ import annotations

import cv2
import numpy as np
import skimage.data

from generation.engine.review import assess, measure


def _wood(w: int = 480, h: int = 360) -> np.ndarray:
    """A brown, grainy backdrop (scikit-image's grass texture, tinted)."""
    grey = skimage.data.grass()[:h, :w].astype(np.float32)
    return np.clip(grey[..., None] * np.float32([0.85, 0.6, 0.35]), 0, 255).astype(np.uint8)


def _ring(h: int, w: int, inner: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (w // 2, h // 2), 120, 1, -1)
    cv2.circle(mask, (w // 2, h // 2), inner, 0, -1)
    return mask > 0


def _brass_ring_on_wood() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A brass ring (an open product: the wood shows through its middle), its true mask, and the
    mask a cut gets when it fills the ring's middle with the wood behind it."""
    rgb = _wood()
    h, w = rgb.shape[:2]
    ring = _ring(h, w, 80)
    rgb[ring] = (205, 165, 60)
    filled = _ring(h, w, 0)
    return rgb, ring, filled


def _signals(rgb: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return measure(rgb, mask, prob=None, parts=1, classical=None)


def test_a_cut_that_filled_an_open_product_with_the_backdrop_is_flagged() -> None:
    rgb, ring, filled = _brass_ring_on_wood()
    right, wrong = assess(_signals(rgb, ring)), assess(_signals(rgb, filled))
    assert "backdrop_inside" not in {r.code for r in right.reasons}
    assert "backdrop_inside" in {r.code for r in wrong.reasons}
    assert wrong.confidence < 0.5 < right.confidence


def test_backdrop_colours_without_the_backdrops_texture_are_not_flagged() -> None:
    # A white ball on white paper has the backdrop's colour everywhere; a label has texture in its own
    # colours. Neither is backdrop left inside the cut.
    paper = np.full((360, 480, 3), 244, np.uint8)
    paper += np.random.default_rng(0).integers(0, 4, paper.shape, dtype=np.uint8)
    ball = np.zeros(paper.shape[:2], np.uint8)
    cv2.circle(ball, (240, 180), 110, 1, -1)
    rgb = paper.copy()
    rgb[ball > 0] = (250, 250, 250)
    assert _signals(rgb, ball > 0)["enclosed_backdrop"] < 0.01

    rgb = _wood()
    box = np.zeros(rgb.shape[:2], bool)
    box[80:280, 140:340] = True
    rgb[box] = (30, 90, 200)
    rgb[140:220, 170:310] = (250, 250, 250)
    cv2.putText(rgb, "LABEL", (175, 195), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 3)
    assert "backdrop_inside" not in {r.code for r in assess(_signals(rgb, box)).reasons}
