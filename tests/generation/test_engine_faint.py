"""Where the engine looks when the model saw nothing: a lone blob of colours the backdrop lacks."""
from __future__ import annotations

import cv2
import numpy as np
import skimage.data

from generation.engine.faint import lone_distinct_box


def _burlap(w: int = 1400, h: int = 1050, seed: int = 0) -> np.ndarray:
    """A brown woven texture (skimage's grass, tinted), unevenly lit, with sensor noise."""
    grey = cv2.resize(skimage.data.grass(), (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    rgb = grey[..., None] * np.float32([120, 80, 50])[None, None, :] / 255.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb *= (1 - 0.3 * ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2))[..., None]
    rgb += np.random.default_rng(seed).normal(0, 2, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_a_plain_texture_has_no_lone_blob() -> None:
    assert lone_distinct_box(_burlap()) is None
    assert lone_distinct_box(np.full((600, 800, 3), 200, np.uint8)) is None


def test_a_small_grey_object_on_the_texture_is_the_lone_blob() -> None:
    rgb = _burlap()
    # 0.1 % of the frame, far from the centre: a grey key-sized bar with a round head.
    cv2.rectangle(rgb, (1000, 800), (1070, 812), (170, 175, 185), -1)
    cv2.circle(rgb, (995, 806), 14, (170, 175, 185), -1)
    box = lone_distinct_box(rgb)
    assert box is not None
    # The object spans (981, 792)-(1070, 820); the blob is its core (the likeness is blurred by a few px).
    x0, y0, x1, y1 = box
    assert 971 <= x0 <= 1000 and 782 <= y0 <= 806 and 1050 <= x1 <= 1080 and 806 <= y1 <= 830


def test_many_specks_of_other_colours_are_not_one_product() -> None:
    # A texture scattered with a few dozen small spots of a colour its border also lacks (flecks in a
    # stone): no spot holds most of the distinct colour, so none is taken for a product.
    rgb = _burlap()
    rng = np.random.default_rng(4)
    for _ in range(40):
        x, y = int(rng.integers(150, 1250)), int(rng.integers(150, 900))
        cv2.circle(rgb, (x, y), 6, (60, 120, 200), -1)
    assert lone_distinct_box(rgb) is None
