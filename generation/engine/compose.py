"""Put a matted product on the preset's white canvas and encode it.

``finish`` is shared by every backend that ends with a cut-out (local, and
Gemini after its own segmentation). It never repaints the product: pixels
with full coverage keep their colour (resampled only when the preset's size
demands); only partially covered edge pixels are recomputed, so that their
backdrop share becomes white instead of the original backdrop colour.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .base import EngineError, GenerationResult, ProgressCallback
from .encode import CONTENT_TYPES, encode_canvas
from .spec import RenderSpec

if TYPE_CHECKING:
    from .cut import Cut

logger = logging.getLogger(__name__)

#: Coverage below this is backdrop noise (a faint veil left by a matte or an
#: exporter), above ``1 - MATTE_EPS`` it is solid product.
MATTE_EPS = 0.02
#: Radius (px, on the side-limited copy) over which the local backdrop colour is averaged.
BACKDROP_RADIUS = 4
#: The backdrop colour is estimated on a copy no larger than this.
BACKDROP_SIDE = 512

WHITE = 255.0


def normalise_matte(matte: np.ndarray) -> np.ndarray:
    """float32 0..1 from a uint8 (0..255) or float (0..1) matte, with noise snapped to 0/1."""
    m = matte.astype(np.float32) / 255.0 if matte.dtype == np.uint8 else matte.astype(np.float32)
    m = np.clip(m, 0.0, 1.0)
    m[m < MATTE_EPS] = 0.0
    m[m > 1.0 - MATTE_EPS] = 1.0
    return m


def _local_backdrop(crop: np.ndarray, matte: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Backdrop colour near each pixel (from pixels with zero coverage) on a grid reduced by
    ``step``, and the sample weight behind each estimate (0: no backdrop pixel nearby)."""
    h, w = matte.shape
    step = max(1.0, max(h, w) / BACKDROP_SIDE)
    size = (max(1, round(w / step)), max(1, round(h / step)))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    weight = (cv2.resize(matte, size, interpolation=cv2.INTER_AREA) == 0).astype(np.float32)
    k = (2 * BACKDROP_RADIUS + 1,) * 2
    total = cv2.boxFilter(weight, cv2.CV_32F, k, normalize=False)
    acc = cv2.boxFilter(small * weight[..., None], cv2.CV_32F, k, normalize=False)
    return acc / np.maximum(total, 1e-6)[..., None], total, step


def ink_layers(crop: np.ndarray, matte: np.ndarray, straight_alpha: bool) -> np.ndarray:
    """HxWx4 uint8: premultiplied "ink" ``a*(255 - F)`` per channel, and coverage ``255*a``.

    Working in ink (how far a pixel is from white, times its coverage) makes
    zero coverage exactly white by construction, keeps solid product pixels
    exact (their ink is ``255 - I``) and lets the layers be resampled as
    8-bit images. A photographed edge pixel is ``I = a*F + (1-a)*B``; its ink
    is ``255*a - (I - (1-a)*B)`` with ``B`` the local backdrop colour, which
    removes colour spill (a green halo from a green backdrop) exactly where
    it comes from. A seller's transparent PNG stores ``F`` itself
    (``straight_alpha``), so there the ink is just ``a*(255 - I)``.
    """
    covered = (matte > 0).view(np.uint8)
    ink = cv2.bitwise_not(crop)
    ink = cv2.bitwise_and(ink, ink, mask=covered)  # zero coverage: no ink at all
    ys, xs = np.nonzero(covered & (matte < 1))
    if ys.size:
        a = matte[ys, xs][:, None]
        edge_ink = a * (WHITE - crop[ys, xs].astype(np.float32))
        if not straight_alpha:
            backdrop, weight, step = _local_backdrop(crop, matte)
            sy = np.minimum((ys / step).astype(np.intp), backdrop.shape[0] - 1)
            sx = np.minimum((xs / step).astype(np.intp), backdrop.shape[1] - 1)
            unmixed = crop[ys, xs].astype(np.float32) - (1 - a) * backdrop[sy, sx]
            spill_free = np.clip(WHITE * a - unmixed, 0.0, WHITE * a)
            # No backdrop sample nearby (an edge deep inside a hole): keep a*(255-I).
            edge_ink = np.where((weight[sy, sx] > 0.5)[:, None], spill_free, edge_ink)
        ink[ys, xs] = np.clip(edge_ink + 0.5, 0, 255).astype(np.uint8)
    coverage = cv2.convertScaleAbs(matte, alpha=WHITE)  # round(255*a), uint8
    return cv2.merge([ink, coverage])


def _product_box(matte: np.ndarray) -> tuple[int, int, int, int]:
    x, y, w, h = cv2.boundingRect(matte.view(np.uint8))
    if w == 0:
        raise EngineError(
            "no_product_found",
            "No product was found in the photo. Upload a photo where the whole product is "
            "inside the frame, on a plain background that contrasts with it.",
        )
    return y, y + h, x, x + w


def _steepen(ink: np.ndarray, coverage: np.ndarray, scale: float) -> None:
    """Undo the soft rim an enlargement adds, in place.

    Enlarging widens a 1 px antialiased edge to ``scale`` px; the coverage is
    steepened back to the photo's edge width and the ink rescaled with it, so
    the product's own colour (ink per unit of coverage) stays under the rim.
    """
    ys, xs = np.nonzero((coverage > 0) & (coverage < 255))
    if not ys.size:
        return
    old = coverage[ys, xs].astype(np.float32)
    new = np.clip((old - 127.5) * scale + 127.5, 0.0, WHITE)
    ink[ys, xs] = np.clip(ink[ys, xs] * (new / old)[:, None] + 0.5, 0, 255).astype(np.uint8)
    coverage[ys, xs] = (new + 0.5).astype(np.uint8)


def render_canvas(rgb: np.ndarray, matte: np.ndarray, spec: RenderSpec, *,
                  straight_alpha: bool = False) -> np.ndarray:
    """The white square canvas (HxWx3 uint8) with the product scaled and centred per ``spec``."""
    size = spec.size
    matte = normalise_matte(matte)
    top, bottom, left, right = _product_box(matte > 0)
    crop_m = np.ascontiguousarray(matte[top:bottom, left:right])
    layers = ink_layers(np.ascontiguousarray(rgb[top:bottom, left:right]), crop_m, straight_alpha)

    target = max(1, round(spec.fill * size))
    scale = target / max(bottom - top, right - left)
    if abs(scale - 1.0) > 1e-9:
        new_w = min(size, max(1, round((right - left) * scale)))
        new_h = min(size, max(1, round((bottom - top) * scale)))
        # Area averaging when shrinking (no ringing); bicubic when enlarging,
        # whose overshoot saturates at 0/255 and is clamped below.
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        layers = cv2.resize(layers, (new_w, new_h), interpolation=interp)
    *channels, coverage = cv2.split(layers)
    ink = cv2.merge(channels)
    if scale > 1.0:
        _steepen(ink, coverage, scale)
    # Resampling smears a faint edge into a wider faint veil (253-254 around a
    # dark product after a 3x enlargement); coverage this low is invisible as
    # product but measurable as off-white background, so it becomes white.
    coverage = cv2.threshold(coverage, int(MATTE_EPS * WHITE), 255, cv2.THRESH_TOZERO)[1]
    # Ink can never exceed its coverage's worth (255 * a, i.e. the coverage byte).
    ink = cv2.min(ink, cv2.merge([coverage] * 3))
    product = cv2.bitwise_not(ink)

    canvas = np.full((size, size, 3), 255, np.uint8)
    h, w = product.shape[:2]
    y0, x0 = (size - h) // 2, (size - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = product
    return canvas


def finish(rgb: np.ndarray, cut: Cut, spec: RenderSpec,
           progress: ProgressCallback | None = None, *, straight_alpha: bool = False) -> GenerationResult:
    """Composite the matted product on exactly #FFFFFF, fit it to the preset, encode, check.

    ``rgb`` is HxWx3 uint8 sRGB; ``matte`` HxW, float 0..1 or uint8 0..255.
    Pass ``straight_alpha=True`` when ``rgb``/``matte`` come from a file's own
    transparency (its edge colours are already the product's). Calls ``progress(70)`` once composed and ``progress(90)`` once
    encoded and checked, letting any exception from it propagate; the caller
    reports 100. ``result.compliance`` is the report on the written bytes.
    """
    started = time.perf_counter()
    preset = spec.preset_def
    matte = cut.matte
    if matte.shape != rgb.shape[:2]:
        raise ValueError(f"matte {matte.shape} does not match image {rgb.shape[:2]}")
    canvas = render_canvas(rgb, matte, spec, straight_alpha=straight_alpha)
    if progress is not None:
        progress(70)
    data, report = encode_canvas(canvas, preset, spec.format)
    if progress is not None:
        progress(90)
    if not report["passed"]:
        failed = sorted(k for k, v in report["checks"].items() if not v["passed"])
        logger.warning("Output fails %s compliance: %s", preset.name, ", ".join(failed))
    content_type, extension = CONTENT_TYPES[spec.format]
    logger.debug("Composed %s %dpx %s, %d bytes (%dms)", preset.name, spec.size, spec.format,
                len(data), (time.perf_counter() - started) * 1000)
    return GenerationResult(
        data=data, content_type=content_type, extension=extension,
        width=spec.size, height=spec.size, compliance=report,
    )
