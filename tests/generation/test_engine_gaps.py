"""The backdrop seen through a product's gaps, cut out as holes: masks drawn on synthetic photos, no model."""
from __future__ import annotations

import numpy as np
import skimage.data

from generation.engine.gaps import find_gaps


def _wood(w: int = 480, h: int = 360) -> np.ndarray:
    """A brown, grainy backdrop (scikit-image's grass texture, tinted)."""
    grey = skimage.data.grass()[:h, :w].astype(np.float32)
    return np.clip(grey[..., None] * np.float32([0.85, 0.6, 0.35]), 0, 255).astype(np.uint8)


def _frame_on_wood() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A blue picture frame lying on wood: the photo, the frame's outer box (the cut that filled
    the frame's middle with the wood), the middle, and the frame itself."""
    rgb = _wood()
    h, w = rgb.shape[:2]
    box = np.zeros((h, w), bool)
    box[80:280, 140:340] = True
    middle = np.zeros((h, w), bool)
    middle[100:260, 160:320] = True
    return rgb, box, middle, box & ~middle


def test_the_backdrop_inside_a_closed_product_is_cut_out() -> None:
    rgb, box, middle, frame = _frame_on_wood()
    rgb[frame] = (40, 70, 190)
    gaps, enclosed = find_gaps(rgb, box)
    assert enclosed > 0.5
    # The wood in the middle becomes a hole; the frame stays whole.
    assert (gaps & middle).sum() > 0.95 * middle.sum()
    assert not (gaps & frame).any()


def test_backdrop_that_reaches_the_outline_is_not_cut_out() -> None:
    # A glass's rim is faint in places, and the table seen through it runs up to its outline: the
    # patch is still enclosed enough to flag, but it is not a gap walled by the product.
    rgb, box, middle, frame = _frame_on_wood()
    rim = frame.copy()
    rim[150:190, 320:340] = False
    rgb[rim] = (40, 70, 190)
    gaps, enclosed = find_gaps(rgb, box)
    assert enclosed > 0.5
    assert not gaps.any()


def test_a_part_in_the_backdrops_hues_but_not_its_colour_is_not_cut_out() -> None:
    # A guitar's wood against bark: the backdrop's hues and grain, but darker than the backdrop.
    rgb, box, middle, frame = _frame_on_wood()
    rgb[frame] = (40, 70, 190)
    rgb[middle] = (rgb[middle] * 0.6).astype(np.uint8)
    gaps, enclosed = find_gaps(rgb, box)
    assert enclosed > 0.3
    assert not gaps.any()


def test_a_cut_without_enclosed_backdrop_is_left_alone() -> None:
    rgb, box, middle, frame = _frame_on_wood()
    rgb[box] = (40, 70, 190)
    gaps, enclosed = find_gaps(rgb, box)
    assert enclosed < 0.01
    assert not gaps.any()
