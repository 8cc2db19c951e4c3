"""Synthetic product photos with a known product mask, shared by the engine tests and the benchmark.

Each scene is rendered deterministically (fixed seeds) from an antialiased
product silhouette: a bottle-like body with a cap and a ring handle (the ring
leaves a real hole that must stay background), painted with a shaded,
slightly noisy colour so "the product's pixels are kept" can be measured.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from PIL import Image

#: Silhouettes are drawn this many times larger, then area-averaged: antialiased edges.
#: Fewer times for big scenes (the benchmark's 4000 px) so drawing stays under ~100 MB.
SUPERSAMPLE = 4
SUPERSAMPLE_PIXELS = 16_000_000


@dataclass(frozen=True)
class Scene:
    name: str
    rgb: np.ndarray  # HxWx3 uint8, the photo
    mask: np.ndarray  # HxW float32 0..1, the product's true coverage
    findable: bool  # whether a correct engine must find the product
    alpha: np.ndarray | None = None  # HxW uint8 for transparent inputs

    def encode(self, fmt: str = "PNG", **params: object) -> bytes:
        if self.alpha is not None:
            im = Image.fromarray(np.dstack([self.rgb, self.alpha]), "RGBA")
        else:
            im = Image.fromarray(self.rgb)
        buf = io.BytesIO()
        im.save(buf, fmt, **params)
        return buf.getvalue()


def product_mask(width: int, height: int, *, box: tuple[float, float, float, float] = (0.3, 0.15, 0.7, 0.85)) -> np.ndarray:
    """Antialiased silhouette inside ``box`` (fractions of the frame: x0, y0, x1, y1)."""
    s = max(1, min(SUPERSAMPLE, int((SUPERSAMPLE_PIXELS / (width * height)) ** 0.5)))
    big = np.zeros((height * s, width * s), np.uint8)
    x0, y0, x1, y1 = (box[0] * width * s, box[1] * height * s, box[2] * width * s, box[3] * height * s)
    bw, bh = x1 - x0, y1 - y0
    # Body: a rounded rectangle in the lower 80 % of the box, left 70 % of its width.
    body = (int(x0), int(y0 + 0.2 * bh), int(x0 + 0.7 * bw), int(y1))
    r = int(0.12 * bw)
    cv2.rectangle(big, (body[0] + r, body[1]), (body[2] - r, body[3]), 255, -1)
    cv2.rectangle(big, (body[0], body[1] + r), (body[2], body[3] - r), 255, -1)
    for cx, cy in ((body[0] + r, body[1] + r), (body[2] - r, body[1] + r),
                   (body[0] + r, body[3] - r), (body[2] - r, body[3] - r)):
        cv2.circle(big, (cx, cy), r, 255, -1)
    # Neck and cap.
    neck_w = 0.22 * bw
    cx = (body[0] + body[2]) / 2
    cv2.rectangle(big, (int(cx - neck_w / 2), int(y0)), (int(cx + neck_w / 2), body[1] + 1), 255, -1)
    # Ring handle on the right: a thick ring whose hole shows the backdrop.
    ring_c = (int(x0 + 0.72 * bw), int(y0 + 0.55 * bh))
    ring_outer, ring_inner = int(0.28 * bw), int(0.16 * bw)
    cv2.circle(big, ring_c, ring_outer, 255, -1)
    cv2.circle(big, ring_c, ring_inner, 0, -1)
    # Re-fill the part of the body the hole cut into (the hole is only beside the body).
    cv2.rectangle(big, (body[0] + r, body[1] + r), (body[2] - r, body[3] - r), 255, -1)
    small = cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def product_paint(width: int, height: int, colour: tuple[int, int, int], seed: int = 1) -> np.ndarray:
    """The product's own pixels: a vertical shading, a label stripe and fine texture."""
    rng = np.random.default_rng(seed)
    ys = np.linspace(0.8, 1.15, height, dtype=np.float32)[:, None, None]
    paint = np.asarray(colour, np.float32)[None, None, :] * ys * np.ones((1, width, 1), np.float32)
    band = slice(int(0.45 * height), int(0.6 * height))
    paint[band] = paint[band] * 0.55 + np.float32([250, 230, 60]) * 0.45
    paint += rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    return np.clip(paint, 0, 255)


def _compose(backdrop: np.ndarray, paint: np.ndarray, mask: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = mask[..., None] * paint + (1 - mask[..., None]) * backdrop
    out += rng.normal(0, noise, out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _flat(width: int, height: int, colour: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.float32), (height, width, 3)).copy()


def plain(width: int = 640, height: int = 480, *, colour: tuple[int, int, int] = (30, 80, 170)) -> Scene:
    mask = product_mask(width, height)
    rgb = _compose(_flat(width, height, (235, 235, 232)), product_paint(width, height, colour), mask, 2.0, 11)
    return Scene("plain", rgb, mask, True)


def gradient(width: int = 640, height: int = 480) -> Scene:
    mask = product_mask(width, height, box=(0.25, 0.2, 0.62, 0.88))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # A studio sweep: light at the top, darker toward the floor, vignetted corners.
    level = 225 - 60 * (yy / height) - 25 * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2)
    backdrop = np.dstack([level, level * 0.97, level * 0.92])
    rgb = _compose(backdrop, product_paint(width, height, (180, 40, 40), seed=2), mask, 2.0, 12)
    return Scene("gradient", rgb, mask, True)


def textured(width: int = 640, height: int = 480) -> Scene:
    """A wooden table: wavy light/dark grain plus noise, behind a blue product."""
    rng = np.random.default_rng(3)
    mask = product_mask(width, height, box=(0.33, 0.12, 0.72, 0.8))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    grain = np.sin(yy / 7.0 + 3 * np.sin(xx / 90.0)) * 0.5 + np.sin(yy / 2.3 + xx / 400.0) * 0.2
    grain += cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 3) * 2
    base = np.float32([165, 115, 70])
    backdrop = base[None, None, :] * (1 + 0.12 * grain[..., None])
    rgb = _compose(backdrop, product_paint(width, height, (40, 90, 190), seed=3), mask, 3.0, 13)
    return Scene("textured", rgb, mask, True)


def shadowed(width: int = 640, height: int = 480) -> Scene:
    """A soft cast shadow to the lower right of the product, on a light grey sweep."""
    mask = product_mask(width, height, box=(0.28, 0.12, 0.64, 0.8))
    shift = np.float32([[1, 0, 0.06 * width], [0, 1, 0.05 * height]])
    cast = cv2.warpAffine(mask, shift, (width, height))
    cast = cv2.GaussianBlur(cast, (0, 0), 0.02 * width) * 0.45
    backdrop = _flat(width, height, (228, 228, 226)) * (1 - cast[..., None])
    rgb = _compose(backdrop, product_paint(width, height, (200, 120, 30), seed=4), mask, 2.0, 14)
    return Scene("shadowed", rgb, mask, True)


def low_contrast(width: int = 640, height: int = 480) -> Scene:
    """A product the same colour as the backdrop, within the sensor noise: not findable."""
    mask = product_mask(width, height)
    rng = np.random.default_rng(5)
    paint = _flat(width, height, (214, 212, 208)) + rng.normal(0, 1.0, (height, width, 1)).astype(np.float32)
    rgb = _compose(_flat(width, height, (212, 212, 208)), paint, mask, 2.5, 15)
    return Scene("low_contrast", rgb, mask, False)


def touching_frame(width: int = 640, height: int = 480) -> Scene:
    """The product runs off the bottom of the photo: a cut-out would show it sliced."""
    mask = product_mask(width, height, box=(0.3, 0.35, 0.7, 1.25))
    rgb = _compose(_flat(width, height, (235, 235, 232)), product_paint(width, height, (30, 80, 170)), mask, 2.0, 16)
    return Scene("touching_frame", rgb, mask, False)


def transparent(width: int = 640, height: int = 480) -> Scene:
    """A seller's own cut-out: RGBA with the backdrop already transparent (RGB black there)."""
    mask = product_mask(width, height)
    paint = product_paint(width, height, (30, 140, 60), seed=6)
    rgb = np.clip(paint + 0.5, 0, 255).astype(np.uint8)
    alpha = np.clip(mask * 255 + 0.5, 0, 255).astype(np.uint8)
    rgb[alpha == 0] = 0
    return Scene("transparent", rgb, mask, True, alpha=alpha)


ALL: dict[str, Callable[..., Scene]] = {
    f.__name__: f for f in (plain, gradient, textured, shadowed, low_contrast, touching_frame, transparent)
}


def iou(matte: np.ndarray, mask: np.ndarray) -> float:
    """Intersection over union of two coverages, each thresholded at one half."""
    a, b = np.asarray(matte) >= 0.5, np.asarray(mask) >= 0.5
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0
