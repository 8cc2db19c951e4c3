"""The cast shadow next to the product: where the floor is darker because the product is there.

A shadow is judged by where it is, never by colour alone (the dark half of
an apple is product, and the salient-object model keeps it): outside the
product's matte, darker than the backdrop would be at that spot (the
border's colour surface), with the backdrop's chroma, and connected to the
product's lower half (where it stands on the floor). Its opacity is how
much it darkens the floor, ``1 - Y / Y_backdrop`` in linear light.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .segment import BORDER_SHARE, _border_mask, _fit_surface

#: A shadow smaller than this share of the product's area is not worth drawing.
MIN_SHADOW_SHARE = 0.01
#: Shadows darker than this opacity are more likely a dark object on the floor.
MAX_OPACITY = 0.85
#: How far from the product (share of its larger side) a cast shadow may reach.
MAX_REACH = 0.6


def _linear_y(l_star: np.ndarray) -> np.ndarray:
    """CIE Y (0..1) from OpenCV's 8-bit L* (0..255)."""
    lab_l = l_star * (100.0 / 255.0)
    f = (lab_l + 16.0) / 116.0
    return np.where(f > 6 / 29, f**3, (f - 4 / 29) * 3 * (6 / 29) ** 2)


def darkened_floor(darker: Any, floor_l: Any, floor_chroma: Any, chroma_shift: Any, spread: Any) -> Any:
    """Whether a colour is the floor's, darkened (elementwise on arrays, or on scalars): ``darker``
    L* levels below the floor's ``floor_l``, short of black, its (a, b) moved ``chroma_shift`` from
    the floor's, whose chroma is ``floor_chroma``; ``spread`` is the floor's own L* noise.
    Darkening a coloured floor shrinks its chroma in proportion, hence the tolerance."""
    return ((darker > np.maximum(2 * spread, 4.0)) & (darker < 0.8 * floor_l)
            & (chroma_shift < 2 * spread + 1.2 * floor_chroma * darker / floor_l))


def cast_shadow(work: np.ndarray, product: np.ndarray) -> np.ndarray | None:
    """Shadow opacity (float32 0..1) on ``work`` (HxWx3 uint8), or None when there is none.

    ``product`` is the product's mask (bool) on ``work``.
    """
    h, w = product.shape
    if h < 8 or w < 8 or not product.any():
        return None
    # Texture (grass, wood grain) is averaged away first: a shadow darkens a
    # whole patch of floor, a texture's dark bits are small.
    sigma = max(1.0, max(h, w) / 160)
    lab = cv2.cvtColor(cv2.GaussianBlur(work, (0, 0), sigma), cv2.COLOR_RGB2LAB).astype(np.float32)
    border = _border_mask(h, w, max(1, min(max(3, round(BORDER_SHARE * max(h, w))), min(h, w) // 6)))
    surface, spread = _fit_surface(lab, border)
    diff = lab - surface
    darker = -diff[..., 0]
    backdrop_l = np.maximum(surface[..., 0], 1.0)
    backdrop_chroma = np.hypot(surface[..., 1] - 128, surface[..., 2] - 128)
    chroma_shift = np.hypot(diff[..., 1], diff[..., 2])
    candidate = darkened_floor(darker, backdrop_l, backdrop_chroma, chroma_shift, spread)
    grown = cv2.dilate(product.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    candidate &= ~grown
    if not candidate.any():
        return None
    ys, xs = np.nonzero(product)
    top, bottom = ys.min(), ys.max()
    side = max(bottom - top + 1, xs.max() - xs.min() + 1)
    # Attached at the contact: a candidate region must touch the product's lower half.
    ring = cv2.dilate(product.view(np.uint8), np.ones((7, 7), np.uint8)) > 0
    ring[: (top + bottom) // 2] = False
    count, labels = cv2.connectedComponents(candidate.view(np.uint8), connectivity=8)
    touching = np.unique(labels[ring & candidate])
    touching = touching[touching > 0]
    if not touching.size:
        return None
    shadow = np.isin(labels, touching)
    reach = max(3, int(MAX_REACH * side))
    # Distance to the product (a distance transform is far cheaper than a dilation this wide).
    dist = cv2.distanceTransform((~product).view(np.uint8), cv2.DIST_L2, 3)
    shadow &= dist <= reach
    if np.count_nonzero(shadow) < MIN_SHADOW_SHARE * len(ys):
        return None

    opacity = 1.0 - _linear_y(lab[..., 0]) / _linear_y(backdrop_l)
    opacity = np.clip(opacity, 0.0, MAX_OPACITY) * shadow
    # Soften the region's own edge (it was decided per pixel) but never inside the product.
    opacity = cv2.GaussianBlur(opacity.astype(np.float32), (0, 0), 1.0)
    opacity[product] = 0.0
    return opacity.astype(np.float32)
