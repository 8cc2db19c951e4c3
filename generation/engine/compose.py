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
from typing import Any, Mapping

import cv2
import numpy as np

from .base import EngineError, GenerationResult, ProgressCallback
from .encode import CONTENT_TYPES, encode_canvas
from .presets import fill_from_margin, preset_for, validate_options

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


def _local_backdrop(crop: np.ndarray, matte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backdrop colour near each pixel (from pixels with zero coverage), on a reduced grid."""
    h, w = matte.shape
    step = max(1.0, max(h, w) / BACKDROP_SIDE)
    size = (max(1, round(w / step)), max(1, round(h / step)))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    weight = (cv2.resize(matte, size, interpolation=cv2.INTER_AREA) == 0).astype(np.float32)
    k = (2 * BACKDROP_RADIUS + 1,) * 2
    total = cv2.boxFilter(weight, cv2.CV_32F, k, normalize=False)
    acc = cv2.boxFilter(small * weight[..., None], cv2.CV_32F, k, normalize=False)
    return acc / np.maximum(total, 1e-6)[..., None], total, step


def premultiplied(crop: np.ndarray, matte: np.ndarray, straight_alpha: bool) -> np.ndarray:
    """HxWx4 float32: colour premultiplied by coverage, with the backdrop's share removed.

    A photographed edge pixel is ``I = a*F + (1-a)*B``; its product share
    ``a*F`` is ``I - (1-a)*B`` with ``B`` the local backdrop colour, which
    removes colour spill (a green halo from a green backdrop) exactly where
    it comes from. A seller's transparent PNG stores ``F`` itself
    (``straight_alpha``), so there the product share is just ``a*I``.
    """
    colour = crop.astype(np.float32)
    out = np.empty(matte.shape + (4,), np.float32)
    out[..., 3] = matte
    out[..., :3] = colour * matte[..., None]
    edge = (matte > 0) & (matte < 1)
    if not straight_alpha and edge.any():
        backdrop, weight, step = _local_backdrop(crop, matte)
        ys, xs = np.nonzero(edge)
        sy = np.minimum((ys / step).astype(np.intp), backdrop.shape[0] - 1)
        sx = np.minimum((xs / step).astype(np.intp), backdrop.shape[1] - 1)
        a = matte[ys, xs][:, None]
        unmixed = colour[ys, xs] - (1 - a) * backdrop[sy, sx]
        # No backdrop sample nearby (an edge deep inside a hole): fall back to a*I.
        known = (weight[sy, sx] > 0.5)[:, None]
        out[ys, xs, :3] = np.where(known, np.clip(unmixed, 0.0, a * WHITE), colour[ys, xs] * a)
    return out


def _product_box(matte: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(matte.any(axis=1)), np.flatnonzero(matte.any(axis=0))
    if rows.size == 0:
        raise EngineError(
            "no_product_found",
            "No product was found in the photo. Upload a photo where the whole product is "
            "inside the frame, on a plain background that contrasts with it.",
        )
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def render_canvas(rgb: np.ndarray, matte: np.ndarray, options: Mapping[str, Any], *,
                  straight_alpha: bool = False) -> np.ndarray:
    """The white square canvas (HxWx3 uint8) with the product scaled and centred per ``options``."""
    size = int(options["size"])
    matte = normalise_matte(matte)
    top, bottom, left, right = _product_box(matte > 0)
    crop_m = np.ascontiguousarray(matte[top:bottom, left:right])
    layers = premultiplied(np.ascontiguousarray(rgb[top:bottom, left:right]), crop_m, straight_alpha)

    target = max(1, round(fill_from_margin(float(options["margin"])) * size))
    scale = target / max(bottom - top, right - left)
    if abs(scale - 1.0) > 1e-9:
        new_w = min(size, max(1, round((right - left) * scale)))
        new_h = min(size, max(1, round((bottom - top) * scale)))
        # Area averaging when shrinking (no ringing); bicubic when enlarging,
        # whose overshoot the clipping below absorbs.
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        layers = cv2.resize(layers, (new_w, new_h), interpolation=interp)
    alpha = np.clip(layers[..., 3], 0.0, 1.0)
    # Premultiplied colour can never exceed its coverage; zero coverage is exactly white.
    colour = np.clip(layers[..., :3], 0.0, alpha[..., None] * WHITE)
    product = colour + (1.0 - alpha[..., None]) * WHITE

    canvas = np.full((size, size, 3), 255, np.uint8)
    h, w = product.shape[:2]
    y0, x0 = (size - h) // 2, (size - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = np.clip(product + 0.5, 0, 255).astype(np.uint8)
    return canvas


def finish(rgb: np.ndarray, matte: np.ndarray, options: Mapping[str, Any] | None,
           progress: ProgressCallback | None = None, *, straight_alpha: bool = False) -> GenerationResult:
    """Composite the matted product on exactly #FFFFFF, fit it to the preset, encode, check.

    ``rgb`` is HxWx3 uint8 sRGB; ``matte`` HxW, float 0..1 or uint8 0..255.
    Pass ``straight_alpha=True`` when ``rgb``/``matte`` come from a file's own
    transparency (its edge colours are already the product's). ``options``
    are validated again here (idempotent), so an empty dict means the
    defaults. Calls ``progress(70)`` once composed and ``progress(90)`` once
    encoded and checked, letting any exception from it propagate; the caller
    reports 100. ``result.compliance`` is the report on the written bytes.
    """
    started = time.perf_counter()
    opts = validate_options(options or {})
    preset = preset_for(opts)
    if matte.shape != rgb.shape[:2]:
        raise ValueError(f"matte {matte.shape} does not match image {rgb.shape[:2]}")
    canvas = render_canvas(rgb, matte, opts, straight_alpha=straight_alpha)
    if progress is not None:
        progress(70)
    data, report = encode_canvas(canvas, preset, opts["format"])
    if progress is not None:
        progress(90)
    if not report["passed"]:
        failed = sorted(k for k, v in report["checks"].items() if not v["passed"])
        logger.warning("Output fails %s compliance: %s", preset.name, ", ".join(failed))
    content_type, extension = CONTENT_TYPES[opts["format"]]
    logger.info("Composed %s %dpx %s, %d bytes (%dms)", preset.name, opts["size"], opts["format"],
                len(data), (time.perf_counter() - started) * 1000)
    return GenerationResult(
        data=data, content_type=content_type, extension=extension,
        width=opts["size"], height=opts["size"], compliance=report,
    )
