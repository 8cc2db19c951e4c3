"""Render a cut-out per its :class:`~generation.engine.spec.RenderSpec`, encode it, check it.

``finish`` is shared by every backend that ends with a cut-out (local, and
Gemini after its own segmentation). It never repaints the product: pixels
with full coverage keep their colour (resampled only when the preset's size
demands); only partially covered edge pixels are recomputed, so that their
backdrop share becomes white (or transparent) instead of the original
backdrop colour.

What it renders:

- ``fit``: ``preset`` scales the product so it takes the preset's fill of
  the canvas (square, or portrait for Zalando) along its binding axis and
  centres its box; ``original`` keeps the
  photo's own width, height and the product where it was (a cut-out).
- ``background``: ``white`` composes on exactly #FFFFFF; ``transparent``
  writes straight (non-premultiplied) alpha whose colour channels are the
  decontaminated product colour, and exactly white where alpha is 0.
- ``shadow``: ``remove`` draws none; ``keep`` draws the photo's own cast
  shadow (``Cut.shadow``), smoothed so no backdrop texture survives in it;
  ``soft`` draws a blurred ellipse under the product's base. Either is a
  darkening of the white (semi-transparent black in the alpha of a
  transparent file) that fades to exactly nothing before the frame the
  compliance checker inspects.

The product's position and size come from its box as defined in
:mod:`generation.engine.coverage`, and the same box goes to the checker as a
claim it verifies against the written pixels.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from . import compliance
from .base import EngineError, GenerationResult, ProgressCallback, RenderedOutput
from .coverage import MATTE_EPS, Box, coverage_bytes, drop_faint, normalise_matte, product_box
from .encode import CONTENT_TYPES, encode_image
from .overlap import beside
from .spec import JobSpec, RenderSpec

if TYPE_CHECKING:
    from .cut import Cut

__all__ = ["MATTE_EPS", "Rendering", "finish", "finish_all", "ink_layers", "normalise_matte", "render", "render_canvas"]

logger = logging.getLogger(__name__)

#: Radius (px, on the side-limited copy) over which the local backdrop colour is averaged.
BACKDROP_RADIUS = 4
#: The backdrop colour is estimated on a copy no larger than this.
BACKDROP_SIDE = 512

#: Shadows are smoothed on a copy no larger than this (they have no detail worth more).
SHADOW_SIDE = 512
#: Blur (share of the product's long side) that wipes backdrop texture out of a kept shadow.
KEEP_SHADOW_BLUR = 0.015
#: A kept shadow is never darker than this (a black cast shadow reads as a hole).
KEEP_SHADOW_MAX = 0.8
#: The synthetic contact shadow: peak opacity, ellipse height and blur (shares of the product's long side).
SOFT_SHADOW_OPACITY = 0.45
SOFT_SHADOW_HEIGHT = 0.025
SOFT_SHADOW_BLUR = 0.015
#: Rows (share of the product's height) whose covered columns make the product's base.
BASE_BAND = 0.04
#: Shadows fade out over this share of the canvas side, ending this many px
#: before the checked frame (one JPEG block, so no ringing reaches it).
SHADOW_FADE = 0.02
SHADOW_FRAME_GUARD_PX = compliance.JPEG_BLOCK + 2

#: Ink (255 minus the darkest channel) at or below this is "faint": a white
#: canvas pixel the checker cannot tell from off-white background.
FAINT_INK = 255 - compliance.PRODUCT_LEVEL

#: Resamples tried to bring the drawn product's long side to the preset's fill (1 px tolerance).
SIZE_ATTEMPTS = 3

WHITE = 255.0


@dataclass(frozen=True)
class Rendering:
    """The rendered output before encoding."""

    pixels: np.ndarray  # HxWx3 RGB (white background) or HxWx4 straight RGBA (transparent) uint8
    product_box: Box  # the product's box in output pixels (coverage.product_box)
    shadow_box: Box | None  # where a drawn shadow lies, or None
    coverage: np.ndarray | None = None  # HxW uint8: the product's coverage as drawn (the box is taken from it)


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
    # The backdrop estimate reads only the photo and the matte: made beside the ink's own steps.
    later = None if straight_alpha else beside(_local_backdrop, crop, matte)
    covered = (matte > 0).view(np.uint8)
    ink = cv2.bitwise_not(crop)
    ink = cv2.bitwise_and(ink, ink, mask=covered)  # zero coverage: no ink at all
    ys, xs = np.nonzero(covered & (matte < 1))
    if ys.size:
        a = matte[ys, xs][:, None]
        pix = crop[ys, xs].astype(np.float32)
        edge_ink = a * (WHITE - pix)
        if later is not None:
            backdrop, weight, step = later.result()
            sy = np.minimum((ys / step).astype(np.intp), backdrop.shape[0] - 1)
            sx = np.minimum((xs / step).astype(np.intp), backdrop.shape[1] - 1)
            unmixed = pix - (1 - a) * backdrop[sy, sx]
            spill_free = np.clip(WHITE * a - unmixed, 0.0, WHITE * a)
            # No backdrop sample nearby (an edge deep inside a hole): keep a*(255-I).
            edge_ink = np.where((weight[sy, sx] > 0.5)[:, None], spill_free, edge_ink)
        ink[ys, xs] = np.clip(edge_ink + 0.5, 0, 255).astype(np.uint8)
    return cv2.merge([ink, coverage_bytes(matte)])


def _no_product() -> EngineError:
    return EngineError(
        "no_product_found",
        "No product was found in the photo. Upload a photo where the whole product is "
        "inside the frame, on a plain background that contrasts with it.",
    )


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


def _drop_faint_rim(ink: np.ndarray, coverage: np.ndarray) -> None:
    """Zero the partially covered pixels too faint to see and away from any visible product, in place.

    A soft matte (a model's, or one widened by resampling) leaves a rim of
    pixels 1-5 levels below white several px out from the visible edge: on a
    white canvas they are indistinguishable from an off-white background and
    fail ``background_white``. Only partially covered pixels go, and only
    those not next to a visibly dark one, so solid product (a white label,
    a white product's own shading) is never touched and the 1 px antialiased
    edge stays.
    """
    c0, c1, c2 = cv2.split(ink)
    darkest_ink = cv2.max(cv2.max(c0, c1), c2)
    strong = cv2.compare(darkest_ink, FAINT_INK, cv2.CMP_GT)
    k = 2 * compliance.PRODUCT_CLEARANCE_PX + 1
    near = cv2.dilate(strong, np.ones((k, k), np.uint8))
    # 255 where the pixel stays, 0 where it goes (OpenCV masks: ~10x numpy's boolean indexing).
    keep = cv2.bitwise_or(near, cv2.compare(coverage, 255, cv2.CMP_EQ))
    cv2.min(coverage, keep, dst=coverage)
    cv2.min(ink, cv2.merge([keep] * 3), dst=ink)


def _shadow_weight(shape: tuple[int, int], box: Box) -> np.ndarray:
    """Per-pixel factor (0..1) over ``box`` that takes a shadow to exactly 0 before the checked frame."""
    h, w = shape
    side = max(h, w)
    frame = compliance.frame_px(side)
    start = frame + SHADOW_FRAME_GUARD_PX
    ramp = max(4.0, SHADOW_FADE * side)
    ys = np.arange(box.top, box.bottom, dtype=np.float32)
    xs = np.arange(box.left, box.right, dtype=np.float32)
    wy = np.clip((np.minimum(ys, h - 1 - ys) - start) / ramp, 0.0, 1.0)
    wx = np.clip((np.minimum(xs, w - 1 - xs) - start) / ramp, 0.0, 1.0)
    return np.minimum.outer(wy, wx)


def _smooth(opacity: np.ndarray, out_size: tuple[int, int], sigma_share: float, long_side: float) -> np.ndarray:
    """``opacity`` (float 0..1) smoothed on a small copy and resized to ``out_size`` (w, h)."""
    h, w = opacity.shape
    step = max(1.0, max(h, w) / SHADOW_SIDE)
    small = cv2.resize(opacity, (max(1, round(w / step)), max(1, round(h / step))), interpolation=cv2.INTER_AREA)
    sigma = max(1.0, sigma_share * long_side / step)
    small = cv2.GaussianBlur(small, (0, 0), sigma)
    return cv2.resize(small, out_size, interpolation=cv2.INTER_LINEAR)


def _soft_shadow(coverage: np.ndarray, box: Box) -> tuple[np.ndarray, Box] | None:
    """A blurred ellipse under the product's base: (float opacity patch, where it goes)."""
    h, w = coverage.shape
    band = max(1, round(BASE_BAND * box.height))
    base_rows = coverage[box.bottom - band:box.bottom, box.left:box.right] >= 128
    cols = np.flatnonzero(base_rows.any(axis=0))
    x0, x1 = (box.left + cols[0], box.left + cols[-1] + 1) if cols.size else (box.left, box.right)
    rx = max(2.0, (x1 - x0) / 2)
    ry = max(2.0, SOFT_SHADOW_HEIGHT * box.long_side)
    sigma = max(1.5, SOFT_SHADOW_BLUR * box.long_side)
    cx, cy = (x0 + x1) / 2, box.bottom - ry / 2
    reach = 3 * sigma
    patch = Box(max(0, int(cx - rx - reach)), max(0, int(cy - ry - reach)),
                min(w, int(np.ceil(cx + rx + reach)) + 1), min(h, int(np.ceil(cy + ry + reach)) + 1))
    if patch.width <= 0 or patch.height <= 0:
        return None
    canvas = np.zeros((patch.height, patch.width), np.uint8)
    cv2.ellipse(canvas, (round(cx - patch.left), round(cy - patch.top)), (round(rx), round(ry)),
                0, 0, 360, 255, thickness=-1, lineType=cv2.LINE_AA)
    opacity = cv2.GaussianBlur(canvas.astype(np.float32) * (SOFT_SHADOW_OPACITY / 255.0), (0, 0), sigma)
    return opacity, patch


def _place_shadow(shadow: np.ndarray, coverage: np.ndarray, opacity: np.ndarray, at: Box) -> None:
    """Max-combine ``opacity`` (float, ``at``-sized) into the uint8 ``shadow`` layer, faded before the frame."""
    faded = opacity * _shadow_weight(coverage.shape, at)
    region = shadow[at.top:at.bottom, at.left:at.right]
    np.maximum(region, np.clip(faded * WHITE + 0.5, 0, 255).astype(np.uint8), out=region)


def _kept_shadow(cut: Cut, matte: np.ndarray) -> tuple[np.ndarray, Box] | None:
    """The photo's own cast shadow outside the product (float 0..1) and its box at input resolution."""
    if cut.shadow is None:
        return None
    if cut.shadow.shape != matte.shape:
        raise ValueError(f"shadow {cut.shadow.shape} does not match matte {matte.shape}")
    opacity = np.clip(cut.shadow.astype(np.float32), 0.0, KEEP_SHADOW_MAX) * (1.0 - matte)
    opacity[opacity < MATTE_EPS] = 0.0
    box = product_box(opacity > 0)
    return (opacity, box) if box is not None else None


def _resized(layers: np.ndarray, region: Box, scale: float) -> np.ndarray:
    if abs(scale - 1.0) <= 1e-9:
        return layers
    new_w = max(1, round(region.width * scale))
    new_h = max(1, round(region.height * scale))
    # Area averaging when shrinking (no ringing); bicubic when enlarging,
    # whose overshoot saturates at 0/255 and is clamped below.
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(layers, (new_w, new_h), interpolation=interp)


def _finished(layers: np.ndarray, scale: float, transparent: bool) -> tuple[np.ndarray, np.ndarray]:
    """(ink, coverage) of resampled layers, with every resample's faint residue set to exactly 0."""
    *channels, coverage = cv2.split(layers)
    ink = cv2.merge(channels)
    if scale > 1.0:
        _steepen(ink, coverage, scale)
    # Resampling smears a faint edge into a wider faint veil (253-254 around a
    # dark product after a 3x enlargement); coverage this low is invisible as
    # product but measurable as off-white background, so it becomes exactly 0.
    coverage = drop_faint(coverage)
    # Ink can never exceed its coverage's worth (255 * a, i.e. the coverage byte).
    ink = cv2.min(ink, cv2.merge([coverage] * 3))
    if not transparent:
        _drop_faint_rim(ink, coverage)
    return ink, coverage


def _fit_scale(box: Box, width: int, height: int, fill: float) -> float:
    """The scale that makes ``box`` take ``fill`` of the canvas along its binding axis.

    On a square canvas that is the long side against the canvas side; on a
    portrait one (Zalando) a tall product is bound by the height, a wide one
    by the width, so it fits both ways and fills the canvas as the checker measures.
    """
    return min(fill * width / box.width, fill * height / box.height)


def _layers_on_canvas(rgb: np.ndarray, matte: np.ndarray, cut: Cut, spec: RenderSpec,
                      straight_alpha: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ink HxWx3, coverage HxW, shadow HxW or None) uint8 layers at the output's geometry."""
    box = product_box(matte > 0)
    if box is None:
        raise _no_product()
    kept = _kept_shadow(cut, matte) if spec.shadow == "keep" else None
    region = box.union(kept[1] if kept else None)

    crop = np.ascontiguousarray(rgb[region.top:region.bottom, region.left:region.right])
    crop_m = np.ascontiguousarray(matte[region.top:region.bottom, region.left:region.right])
    layers = ink_layers(crop, crop_m, straight_alpha)

    if spec.fit == "original":
        out_h, out_w = matte.shape
        scale = 1.0
        ink, coverage = _finished(layers, 1.0, spec.transparent)
        ox, oy = region.left, region.top
    else:
        out_w, out_h = spec.canvas
        scale = _fit_scale(box, out_w, out_h, spec.fill)
        for _ in range(SIZE_ATTEMPTS):
            ink, coverage = _finished(_resized(layers, region, scale), scale, spec.transparent)
            found = product_box(coverage > 0)
            if found is None:
                raise _no_product()
            drawn = found
            # A soft matte (a seller's feathered alpha, a model's soft edge)
            # loses its faint outer part to the clean-up, so the drawn box can
            # be smaller than the matte's: size by the box as drawn, which is
            # the box the checker measures.
            more = _fit_scale(drawn, out_w, out_h, spec.fill)
            binding = drawn.width if drawn.width / out_w >= drawn.height / out_h else drawn.height
            if abs(more - 1.0) * binding <= 1:
                break
            scale *= more
        # Centre the product's box as it is drawn (not the region, which may
        # hold a shadow): the box the checker is told about is the one centred.
        ox = (out_w - drawn.width) // 2 - drawn.left
        oy = (out_h - drawn.height) // 2 - drawn.top

    canvas_ink = np.zeros((out_h, out_w, 3), np.uint8)
    canvas_cov = np.zeros((out_h, out_w), np.uint8)
    lh, lw = coverage.shape
    # The placed layers clipped to the canvas (a shadow may reach past it).
    dst = Box(max(0, ox), max(0, oy), min(out_w, ox + lw), min(out_h, oy + lh))
    src = dst.shifted(-ox, -oy)
    canvas_ink[dst.top:dst.bottom, dst.left:dst.right] = ink[src.top:src.bottom, src.left:src.right]
    canvas_cov[dst.top:dst.bottom, dst.left:dst.right] = coverage[src.top:src.bottom, src.left:src.right]

    shadow: np.ndarray | None = None
    if spec.shadow == "keep" and kept is not None:
        opacity = kept[0][region.top:region.bottom, region.left:region.right]
        smooth = _smooth(opacity, (lw, lh), KEEP_SHADOW_BLUR, box.long_side)
        shadow = np.zeros((out_h, out_w), np.uint8)
        _place_shadow(shadow, canvas_cov, smooth[src.top:src.bottom, src.left:src.right], dst)
    elif spec.shadow == "soft":
        placed = product_box(canvas_cov > 0)
        soft = _soft_shadow(canvas_cov, placed) if placed is not None else None
        if soft is not None:
            shadow = np.zeros((out_h, out_w), np.uint8)
            _place_shadow(shadow, canvas_cov, *soft)
    return canvas_ink, canvas_cov, shadow


def _white(ink: np.ndarray, coverage: np.ndarray, shadow: np.ndarray | None) -> np.ndarray:
    """The product over its shadow over exactly white, HxWx3 uint8."""
    if shadow is not None:
        # A shadow darkens only the floor the product leaves visible: (1 - a) * s.
        floor = cv2.multiply(cv2.bitwise_not(coverage), shadow, scale=1 / 255.0)
        ink = cv2.add(ink, cv2.merge([floor] * 3))
    return cv2.bitwise_not(ink)


def _rgba(ink: np.ndarray, coverage: np.ndarray, shadow: np.ndarray | None, area: Box) -> np.ndarray:
    """Straight RGBA: the product over a semi-transparent black shadow; zero alpha is white.

    Only ``area`` (the product's and the shadow's boxes) can have alpha, so
    the work is limited to it, in 8-bit OpenCV arithmetic (~10x numpy floats).
    """
    h, w = coverage.shape
    out = np.zeros((h, w, 4), np.uint8)
    out[..., :3] = 255
    sl = np.s_[area.top:area.bottom, area.left:area.right]
    cov = np.ascontiguousarray(coverage[sl])
    # Without a shadow the alpha is exactly the product's coverage: a cut-out's alpha is its mask.
    alpha = cov if shadow is None else cv2.add(
        cov, cv2.multiply(cv2.bitwise_not(cov), np.ascontiguousarray(shadow[sl]), scale=1 / 255.0))
    # Premultiplied colour is a*F = coverage - ink (exact: ink never exceeds coverage); the
    # shadow adds black, no colour. Straight colour = premultiplied * 255 / alpha, rounded.
    premult = cv2.subtract(cv2.merge([cov] * 3), np.ascontiguousarray(ink[sl]))
    colour = cv2.divide(premult, cv2.merge([alpha] * 3), scale=255.0)
    clear = cv2.compare(alpha, 0, cv2.CMP_EQ)
    colour = cv2.bitwise_or(colour, cv2.merge([clear] * 3))
    out[sl] = cv2.merge([colour, alpha])
    return out


def render(rgb: np.ndarray, cut: Cut, spec: RenderSpec, *, straight_alpha: bool = False) -> Rendering:
    """Render ``cut`` of ``rgb`` (HxWx3 uint8 sRGB) per ``spec``; see the module docstring."""
    matte = normalise_matte(cut.matte)
    if matte.shape != rgb.shape[:2]:
        raise ValueError(f"matte {matte.shape} does not match image {rgb.shape[:2]}")
    ink, coverage, shadow = _layers_on_canvas(rgb, matte, cut, spec, straight_alpha)
    box = product_box(coverage > 0)
    if box is None:
        raise _no_product()
    shadow_box = product_box(shadow > 0) if shadow is not None else None
    if shadow_box is None:
        shadow = None
    pixels = _rgba(ink, coverage, shadow, box.union(shadow_box)) if spec.transparent \
        else _white(ink, coverage, shadow)
    return Rendering(pixels=pixels, product_box=box, shadow_box=shadow_box, coverage=coverage)


def render_canvas(rgb: np.ndarray, matte: np.ndarray, spec: RenderSpec, *,
                  straight_alpha: bool = False) -> np.ndarray:
    """The rendered pixels of ``matte`` over ``rgb`` with no shadow (HxWx3, or HxWx4 when transparent)."""
    from .cut import Cut

    cut = Cut(matte=matte, shadow=None, confidence=1.0, review_reasons=(),
              segmenter="classical", model=None, model_sha256=None)
    return render(rgb, cut, spec, straight_alpha=straight_alpha).pixels


def _review(cut: Cut) -> dict[str, Any]:
    return {
        "needs_review": bool(cut.needs_review),
        "cut_confidence": round(float(cut.confidence), 3),
        "review_reasons": [{"code": r.code, "message": r.message} for r in cut.review_reasons],
    }


def finish(rgb: np.ndarray, cut: Cut, spec: RenderSpec,
           progress: ProgressCallback | None = None, *, straight_alpha: bool = False) -> GenerationResult:
    """Render ``cut`` per ``spec``, encode, check the written bytes.

    ``rgb`` is HxWx3 uint8 sRGB; ``cut.matte`` HxW, float 0..1 or uint8 0..255.
    Pass ``straight_alpha=True`` when ``rgb``/``cut.matte`` come from a file's
    own transparency (its edge colours are already the product's). Calls
    ``progress(70)`` once composed and ``progress(90)`` once encoded and
    checked, letting any exception from it propagate; the caller reports 100.
    ``result.compliance`` is the report on the written bytes plus the cut's
    own review (``needs_review``, ``cut_confidence``, ``review_reasons``).
    """
    started = time.perf_counter()
    rendering = render(rgb, cut, spec, straight_alpha=straight_alpha)
    if progress is not None:
        progress(70)
    # The checker is told what was drawn (box and coverage) and verifies it against the written pixels.
    claim = compliance.Claim(product_box=rendering.product_box, shadow_box=rendering.shadow_box,
                             coverage=rendering.coverage)
    data, report = encode_image(rendering.pixels, spec, claim)
    if progress is not None:
        progress(90)
    failed = compliance.failed_checks(report)
    if failed:
        logger.warning("Output fails %s compliance: %s", spec.preset, ", ".join(failed))
    report = {**report, **_review(cut)}
    content_type, extension = CONTENT_TYPES[spec.format]
    height, width = rendering.pixels.shape[:2]
    logger.debug("Composed %s %dx%d %s %s, %d bytes (%dms)", spec.preset, width, height, spec.format,
                 spec.background, len(data), (time.perf_counter() - started) * 1000)
    return GenerationResult(
        data=data, content_type=content_type, extension=extension,
        width=width, height=height, compliance=report,
    )


def finish_all(rgb: np.ndarray, cut: Cut, job: JobSpec, progress: ProgressCallback | None = None, *,
               straight_alpha: bool = False, start: int = 40) -> GenerationResult:
    """``finish`` for every output of ``job`` from the one ``cut``: the cut-out is shared, each
    output gets its own canvas, shadow, file and compliance report.

    Progress runs from ``start`` (what the caller reported last) to 90 across the outputs. The result's top-level
    fields are the first output's; ``result.outputs`` holds them all in ``job``'s order.
    """
    count = len(job.outputs)
    rendered: list[RenderedOutput] = []
    first: GenerationResult | None = None
    for i, spec in enumerate(job.outputs):
        low, high = start + (90 - start) * i / count, start + (90 - start) * (i + 1) / count

        def step(pct: int, low: float = low, high: float = high) -> None:
            # finish() reports 70 (composed) and 90 (encoded, checked): scaled into this output's share.
            if progress is not None:
                progress(int(low + (high - low) * (pct - 40) / 50))

        result = finish(rgb, cut, spec, step, straight_alpha=straight_alpha)
        first = first or result
        rendered.append(RenderedOutput(
            name=spec.name, preset=spec.preset, format=spec.format, data=result.data,
            content_type=result.content_type, extension=result.extension,
            width=result.width, height=result.height, compliance=result.compliance,
        ))
    assert first is not None
    return dataclasses.replace(first, outputs=tuple(rendered))
