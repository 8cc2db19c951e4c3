"""The cut-out: the product's matte, its cast shadow, and how sure we are of both.

:func:`cut_product` is the one entry point the backends use:

1. A seller's own transparency is the cut-out as is.
2. With a ``hint_box`` the work is confined to the box plus a margin (the
   model sees a small product at a better resolution) and everything
   outside the box is background.
3. The salient-object model (:mod:`generation.engine.saliency`) gives a
   soft map at 320x320; it is upsampled to the guide resolution, the
   product's parts are picked from it, and the edge is refined at full
   resolution (:mod:`generation.engine.refine`).
4. The classical border model of the backdrop checks the result (where the
   backdrop is plain enough for it to be right) and finds the cast shadow
   (:mod:`generation.engine.shadow`).
5. The review signals (:mod:`generation.engine.review`) give the
   confidence and the reasons a person should look.
6. A cut flagged for its outline whose product has the colours of the
   frame's border (the model picked part of a busy backdrop: gears, a slab
   of bark) gets a second look at the biggest blobs of colours the border
   lacks; a candidate that stands out from its surroundings clearly more
   replaces it, and the flag stays. The winner is seen again at its own box
   while that grows it and it still passes the same test (a product part
   with the backdrop's colours, beyond the blob's box, is taken in).
7. A cut of a product well inside the frame gets one second model pass on
   its own box (a small or thin product seen at a better resolution); it
   replaces the first cut only when it keeps most of it, and a flag stays.
   A piece the first cut had and the second leaves out is put back when it
   joins the second cut, the first look was sure of it, it is no cast
   shadow and the frame's border hardly shows its colours (a strawberry's
   stem, a glass's rim, a syringe's plunger).
8. A faint model answer (nothing salient) that points at a spot with
   colours the border lacks gets a closer look at that spot, flagged,
   instead of a refusal; when the spot is the backdrop, so does the one
   compact blob of colours the border lacks, if there is one (:mod:`.faint`).

Last, without a hint box, the final cut is compared with copies of its own
mask moved elsewhere in the photo: when the backdrop there looks as much like
it as the copies look like each other (one pebble of the gravel), it is
flagged ``backdrop_piece``; the cut stays as it is.

With ``IMAGEGEN_SEGMENTER=classical`` step 3 is the border-model/GrabCut
pipeline of :mod:`generation.engine.segment`. A product is refused
(``no_product_found``) only when neither finds anything; when in doubt the
cut is made and flagged.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .base import EngineError
from .faint import lone_distinct_box
from .overlap import beside
from .refine import guide_size, refine
from .review import RAMPS, Assessment, ReviewReason, assess, frame_contact, lookalike, measure
from .saliency import ModelCannotRun, Segmenter
from .segment import (
    MIN_PRODUCT_SHARE, SEED_SCORE, SURE_BG_SCORE, _downscale, _matte_from_alpha, border_likeness,
    coarse_mask, model_background, no_product, refine_matte,
)
from .shadow import cast_shadow, darkened_floor

logger = logging.getLogger(__name__)

__all__ = ["Cut", "ReviewReason", "cut_product"]

#: The model's probability at which a pixel is product.
THRESHOLD = 0.5
#: A model whose raw output spans less than this saw nothing salient.
MIN_MODEL_RANGE = 0.2
#: Separate parts are kept when at least this share of the main part, or
#: when the model is sure of them (a coin next to a wallet, earrings).
MIN_PART_SHARE = 0.02
SURE_PART_SHARE, SURE_PART_PROB = 0.002, 0.95
#: Margin around a hint box, as a share of the box's larger side.
HINT_MARGIN = 0.08
#: Enclosed background specks below this share of the product are filled.
MAX_SPECK_SHARE = 0.001
#: A cut gets one more model pass on its own box plus this margin (share of the box's larger
#: side), when that box is at most this share of the photo (else the model saw it large enough).
SECOND_LOOK_MARGIN, SECOND_LOOK_MAX_SHARE = 0.25, 0.5
#: The second look replaces the first cut only when it keeps at least this share of it (it may add
#: parts the first missed or trim a shadow tail); one that drops more lost the product's context.
SECOND_LOOK_KEEP = 0.85
#: A piece of the first cut that the accepted second look leaves out is put back when it joins the
#: second cut (within 3 px), is at least RESTORE_MIN_SHARE of it, the first matte's mean over it is at
#: least RESTORE_MIN_MATTE, the cast shadow's mean under it is below RESTORE_MAX_SHADOW, and its
#: mean border likeness is at most RESTORE_LIKENESS: the crop loses the frame's border, the only
#: sample of the backdrop, so a piece in colours the border lacks is the product the crop could not
#: tell from its new surroundings. Dropped pieces of the evaluation set in the backdrop's colours
#: (a trumpet's bridged loops, a stethoscope's paper, gravel by a tennis ball) measured 0.38-0.99;
#: product pieces 0.02-0.33, a glass's see-through parts 0.58-0.89 (not restored). Measured in
#: docs/engine.md, "A piece the second look drops".
RESTORE_LIKENESS, RESTORE_MIN_MATTE, RESTORE_MIN_SHARE, RESTORE_MAX_SHADOW = 0.35, 0.6, 0.002, 0.1
#: The width (px) of the backdrop around a piece that :func:`_shadow_like` compares it with.
RESTORE_RING = 12
#: A rescued cut (``backdrop_picked``) has had its own looks at its box, each judged by the rescue's
#: test; step 7's test (keeps 85 %) cannot see the backdrop come back (seed 1's guitar 0.84 -> 0.65).
NO_SECOND_LOOK = frozenset({"touches_frame", "fills_frame", "model_found_nothing", "faint_product", "backdrop_picked"})
#: A cut the engine doubts is cut again with the model at this input side instead of its own 320:
#: U²-Net-P is fully convolutional, and a thin or see-through product gets twice the model's pixels.
#: About 2.2x one pass, and only for flagged cuts, so the median photo's time is unchanged. Not for
#: a cut the model barely saw (nothing to look at more closely) nor one a second look at the
#: backdrop's missing colours already replaced (the larger view sees the same backdrop again).
LARGER_SIDE = 448
NO_LARGER_LOOK = frozenset({"model_found_nothing", "faint_product", "backdrop_picked"})
#: Reasons that flag a cut without sending it to the larger look: for ``part_left_out`` the 448 px
#: look took a bass guitar's neck in (0.77 -> 0.96) but cost another 0.008 (docs/engine.md, "A part
#: the model saw, left out"); the flag alone changes no cut. ``gap_filled`` is a flag only by design
#: (docs/engine.md, "A gap filled with the backdrop").
FLAG_ONLY = frozenset({"part_left_out", "gap_filled"})
#: A faint answer (the model's raw range under MIN_MODEL_RANGE) still points somewhere: when the
#: spot it points at has colours the frame's border does not (median border likeness at most this;
#: the spot of a photo of nothing, a flat wall or a texture, measured 0.9-0.99, a small key 0.31),
#: the model looks again at that spot, seen at least FAINT_ZOOM times its size.
FAINT_MAX_LIKENESS, FAINT_ZOOM = 0.5, 4.0
#: A flagged cut whose product mostly has the border's colours (mean border likeness at least
#: this) has probably picked part of a busy backdrop (gears, a slab of bark, a pebble); the model
#: then looks again at the biggest blobs of colours the border lacks (likeness under
#: DISTINCT_LIKENESS, at least DISTINCT_MIN_SHARE of the frame), at most RESCUE_TRIES of them.
RESCUE_LIKENESS, DISTINCT_LIKENESS, DISTINCT_MIN_SHARE, RESCUE_TRIES = 0.45, 0.15, 0.002, 2
#: A rescue replaces the first cut only when its product stands out from its surroundings by this
#: much more (ring likeness minus product likeness) and the model is not unsure of it. A first cut
#: that stands out by less than RESCUE_MIN_FIRST is not judged by colour at all: colour separates
#: nothing there (a see-through glass shows the table through it, a camouflaged product), and a
#: colour-driven second look would trade the whole product for one distinct part of it.
RESCUE_MIN_GAIN, RESCUE_MIN_CONFIDENCE, RESCUE_MIN_FIRST = 0.15, 0.4, 0.05
#: A rescue's winner is seen again at its own box (plus SECOND_LOOK_MARGIN) up to this many times,
#: while each look still passes the rescue's test and grows the cut by more than this factor.
RESCUE_GROW_LOOKS, RESCUE_GROWTH = 3, 1.02
RESCUE_REASON = ReviewReason(
    "backdrop_picked",
    "The first cut had the backdrop's colours; this cut comes from a second look at the part of the "
    "photo whose colours the backdrop does not have.")
DISAGREE_REASON = ReviewReason(
    "looks_disagree",
    "A closer look at the product left out much of what the first cut kept, so one of the two is wrong.")
FAINT_REASON = ReviewReason(
    "faint_product",
    "The product model barely saw a product in the whole photo; this cut comes from a closer look at the "
    "one spot it pointed at.")


@dataclass(frozen=True)
class Cut:
    #: HxW float32 0..1 at the input's resolution: the product only (its own shading is product).
    matte: np.ndarray
    #: HxW float32 0..1: how much the cast shadow outside the product darkens the floor, or None.
    shadow: np.ndarray | None
    #: 0..1, calibrated: the estimated chance that the cut is good.
    confidence: float
    review_reasons: tuple[ReviewReason, ...]
    #: "u2netp", "classical", the operator's model file name, or "alpha" (the file's own transparency).
    segmenter: str
    model: str | None
    model_sha256: str | None

    @property
    def needs_review(self) -> bool:
        return bool(self.review_reasons)


def _region(shape: tuple[int, ...], hint_box: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    if hint_box is None:
        return 0, 0, w, h
    x0, y0, x1, y1 = (int(v) for v in hint_box)
    x0, x1 = sorted((min(max(x0, 0), w), min(max(x1, 0), w)))
    y0, y1 = sorted((min(max(y0, 0), h), min(max(y1, 0), h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0, 0, w, h
    m = round(HINT_MARGIN * max(x1 - x0, y1 - y0)) + 2
    return max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)


def _pick_parts(fg: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, int]:
    """The product's part(s) of the model's mask: the largest, and the others big or sure enough."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg.view(np.uint8), connectivity=8)
    if count <= 1:
        return fg, 0
    areas = stats[1:, cv2.CC_STAT_AREA]
    main = int(np.argmax(areas)) + 1
    keep = [main]
    peak = np.zeros(count, np.float32)
    np.maximum.at(peak, labels.ravel(), prob.ravel())
    for i in range(1, count):
        if i == main:
            continue
        share = stats[i, cv2.CC_STAT_AREA] / stats[main, cv2.CC_STAT_AREA]
        if share >= MIN_PART_SHARE or (share >= SURE_PART_SHARE and peak[i] >= SURE_PART_PROB):
            keep.append(i)
    return np.isin(labels, keep), len(keep)


def _fill_specks(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed pinholes (a highlight the model missed), keep real holes (a mug's handle)."""
    inverse = (~mask).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inverse, connectivity=4)
    h, w = mask.shape
    limit = MAX_SPECK_SHARE * max(np.count_nonzero(mask), 1)
    small = [
        i for i in range(1, count)
        if stats[i, cv2.CC_STAT_AREA] <= limit
        and stats[i, cv2.CC_STAT_LEFT] > 0 and stats[i, cv2.CC_STAT_TOP] > 0
        and stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] < w
        and stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] < h
    ]
    return mask | np.isin(labels, small) if small else mask


def _classical_check(small: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The border model's own product mask on ``small`` (when the backdrop is plain enough to
    trust it, else None) and its per-pixel distance to the backdrop."""
    if min(small.shape[:2]) < 16:
        return None, None
    model = model_background(small)
    if not model.plain:
        return None, model.score
    fg = (model.score >= (SURE_BG_SCORE + SEED_SCORE) / 2) & ~model.shadow
    fg = cv2.morphologyEx(fg.view(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    return fg, model.score


def _place(full_shape: tuple[int, int], region: tuple[int, int, int, int], part: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = region
    if (y1 - y0, x1 - x0) == full_shape:
        return part
    out = np.zeros(full_shape, np.float32)
    out[y0:y1, x0:x1] = part
    return out


def _clip_to_box(matte: np.ndarray, hint_box: tuple[int, int, int, int] | None) -> None:
    if hint_box is None:
        return
    h, w = matte.shape
    x0, y0, x1, y1 = (int(v) for v in hint_box)
    keep = np.zeros_like(matte, dtype=bool)
    keep[max(0, y0):min(h, y1), max(0, x0):min(w, x1)] = True
    matte[~keep] = 0.0


def _shadow(work: np.ndarray, product: np.ndarray, matte: np.ndarray) -> np.ndarray | None:
    """Cast shadow opacity at the region's full resolution (None when there is none); ``work`` is
    the region's working copy."""
    wh, ww = work.shape[:2]
    small_product = cv2.resize(product.view(np.uint8), (ww, wh), interpolation=cv2.INTER_NEAREST) > 0
    opacity = cast_shadow(work, small_product)
    if opacity is None:
        return None
    h, w = matte.shape
    # Only the shadow's own box is brought to full resolution.
    bx, by, bw, bh = cv2.boundingRect((opacity >= 0.02).view(np.uint8) if opacity.dtype == bool
                                      else (opacity >= 0.02).astype(np.uint8))
    full = np.zeros((h, w), np.float32)
    if bw == 0:
        return None
    sx, sy = w / ww, h / wh
    x0, y0 = max(0, int((bx - 1) * sx)), max(0, int((by - 1) * sy))
    x1, y1 = min(w, int(np.ceil((bx + bw + 1) * sx))), min(h, int(np.ceil((by + bh + 1) * sy)))
    # Sample the small map at the box's full-resolution pixel centres: small x = (X + 0.5) / sx - 0.5,
    # an affine map, so no per-pixel coordinate arrays are built.
    to_small = np.float32([[1 / sx, 0, (x0 + 0.5) / sx - 0.5], [0, 1 / sy, (y0 + 0.5) / sy - 0.5]])
    part = cv2.warpAffine(opacity.astype(np.float32, copy=False), to_small, (x1 - x0, y1 - y0),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    m = matte[y0:y1, x0:x1]
    part *= 1.0 - m
    # Where the cut says product, nothing is shadow (the renderer draws the shadow under it).
    part[(part < 0.02) | (m >= 0.5)] = 0.0
    full[y0:y1, x0:x1] = part
    return full


@dataclass(frozen=True)
class _Faint:
    """The model saw too little to cut, but pointed at ``box`` (region pixels), which is worth a closer look."""

    box: tuple[int, int, int, int] | None


def _faint_box(raw: np.ndarray, work: np.ndarray, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """Where a faint model answer points, when that spot does not look like the backdrop; else
    the one blob of colours the frame's border lacks, when there is one (:mod:`.faint`).

    ``raw`` is the (normalised) model map, ``work`` the region's working copy, ``rgb`` the region.
    A photo of nothing (a flat wall, a texture) also gives a normalised peak, but of the
    backdrop's own colours, and has no lone blob of other colours: there the answer stays "nothing".
    """
    h, w = rgb.shape[:2]
    fg = (raw >= THRESHOLD).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count > 1:
        main = int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) + 1
        wh, ww = work.shape[:2]
        spot = cv2.resize((labels == main).view(np.uint8), (ww, wh), interpolation=cv2.INTER_NEAREST) > 0
        if spot.any() and float(np.median(border_likeness(work)[spot])) <= FAINT_MAX_LIKENESS:
            sx, sy = w / raw.shape[1], h / raw.shape[0]
            x, y, bw, bh = (int(v) for v in stats[main, :4])
            return _zoomed(((x + bw / 2) * sx, (y + bh / 2) * sy), max(bw * sx, bh * sy), (h, w))
    # The model's spot is the backdrop (or there is none): a small product it missed may still
    # have colours the backdrop lacks (a key 0.07 % of a burlap photo).
    blob = lone_distinct_box(rgb)
    if blob is None:
        return None
    x0, y0, x1, y1 = blob
    logger.debug("A faint model answer on the backdrop; a lone blob of distinct colours at %s", blob)
    return _zoomed(((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0), (h, w))


def _zoomed(centre: tuple[float, float], size: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The box around ``centre`` FAINT_ZOOM times ``size`` across (clipped to ``shape``), or None
    when that is over SECOND_LOOK_MAX_SHARE of the region (no closer than the first look)."""
    h, w = shape
    cx, cy = centre
    half = FAINT_ZOOM * max(size, 8.0) / 2
    x0, y0, x1, y1 = int(cx - half), int(cy - half), int(np.ceil(cx + half)), int(np.ceil(cy + half))
    box = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if (box[2] - box[0]) * (box[3] - box[1]) > SECOND_LOOK_MAX_SHARE * w * h:
        return None
    return box


#: The model sees a photo squashed to a square; a strip longer than this many times its width is first
#: mirrored out (reflected copies of itself) to this aspect, so its width is not squashed to a few px
#: (a 4000x120 strip: 10 of the model's 320 px across, 38 with the copies).
MAX_MODEL_ASPECT = 4.0


def _saliency(segmenter: Segmenter, rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The model's map of ``rgb`` (at the model's resolution, or a strip's share of it) and its raw range.

    Reflected copies rather than a flat pad: the model takes a flat field around a band of texture for
    a salient band, while the strip's own content continued outwards looks like a wider photo of it.
    """
    h, w = rgb.shape[:2]
    if max(h, w) <= MAX_MODEL_ASPECT * min(h, w):
        return segmenter.saliency(rgb)
    short = int(np.ceil(max(h, w) / MAX_MODEL_ASPECT))
    pad = short - min(h, w)
    before, after = pad // 2, pad - pad // 2
    if h < w:
        padded = cv2.copyMakeBorder(rgb, before, after, 0, 0, cv2.BORDER_REFLECT_101 if h > 1 else cv2.BORDER_REPLICATE)
    else:
        padded = cv2.copyMakeBorder(rgb, 0, 0, before, after, cv2.BORDER_REFLECT_101 if w > 1 else cv2.BORDER_REPLICATE)
    raw, spread = segmenter.saliency(padded)
    ph, pw = padded.shape[:2]
    sy, sx = raw.shape[0] / ph, raw.shape[1] / pw
    if h < w:
        part = raw[int(before * sy):max(int(before * sy) + 1, int(np.ceil((before + h) * sy))), :]
    else:
        part = raw[:, int(before * sx):max(int(before * sx) + 1, int(np.ceil((before + w) * sx)))]
    return np.ascontiguousarray(part), spread


def _learned(rgb: np.ndarray, work: np.ndarray, segmenter: Segmenter,
             box_in_region: tuple[int, int, int, int] | None, photo_share: float = 1.0,
             guide: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, Assessment] | _Faint:
    """Matte, product mask and guide-size copy from the model, or :class:`_Faint` when it saw
    nothing (with the spot it pointed at, when that is worth a closer look).

    ``photo_share`` is the region's share of the photo: the product's size is judged against the
    photo, not the region, when a second look crops it. ``guide`` is ``rgb``'s guide copy
    (:func:`_guide_copy`) when the caller has made it already."""
    h, w = rgb.shape[:2]
    raw, spread = _saliency(segmenter, rgb)
    gw, gh = guide_size(h, w)
    prob = cv2.resize(raw, (gw, gh), interpolation=cv2.INTER_LINEAR)
    if box_in_region is not None:
        bx0, by0, bx1, by1 = box_in_region
        sx, sy = gw / w, gh / h
        inside = np.zeros_like(prob, dtype=bool)
        inside[int(by0 * sy):int(np.ceil(by1 * sy)), int(bx0 * sx):int(np.ceil(bx1 * sx))] = True
        prob[~inside] = 0.0
    fg = prob >= THRESHOLD
    if spread < MIN_MODEL_RANGE or np.count_nonzero(fg) < MIN_PRODUCT_SHARE * 0.25 * fg.size:
        return _Faint(_faint_box(raw, work, rgb) if box_in_region is None else None)
    product, parts = _pick_parts(fg, prob)
    product = _fill_specks(product)
    small = guide if guide is not None else _guide_copy(rgb)
    # The backdrop model's comparison signals are logged, not judged (review.UNJUDGED): only worth
    # their time when someone reads the debug log.
    classical, score = _classical_check(work) if logger.isEnabledFor(logging.DEBUG) else (None, None)
    if classical is not None:
        classical = cv2.resize(classical.view(np.uint8), (gw, gh), interpolation=cv2.INTER_NEAREST) > 0
    # The review signals read the product mask, not the refined matte: measured beside the refinement.
    signals_later = beside(measure, small, product, prob=prob, parts=parts, classical=classical,
                           backdrop_score=score, model_side=segmenter.side, photo_side=max(h, w))
    matte = refine(rgb, prob, product, segmenter.side, small)
    signals = signals_later.result()
    signals["model_range"] = spread
    for key in ("tiny", "huge"):
        if key in signals:
            signals[key] *= photo_share
    return matte, product, small, assess(signals)


def _classical(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Assessment]:
    """Matte, product mask (at the working size) and the working copy from the classical pipeline."""
    product, work, _ = coarse_mask(rgb)
    matte = refine_matte(rgb, product, work)
    signals = measure(work.rgb, product, prob=None, parts=1, classical=None)
    return matte, product, work.rgb, assess(signals)


def cut_product(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    *,
    hint_box: tuple[int, int, int, int] | None = None,
    segmenter: Segmenter,
) -> Cut:
    """Cut the product out of ``rgb`` (HxWx3 uint8).

    ``alpha`` (HxW uint8) is the input's own transparency: the seller's
    cut-out, used as is. ``hint_box`` (x0, y0, x1, y1, input pixels) says
    where the product lies: everything outside it is background. Raises
    ``EngineError("no_product_found")`` only when there is really nothing to cut.
    """
    if alpha is not None:
        return Cut(matte=_matte_from_alpha(alpha), shadow=None, confidence=1.0, review_reasons=(),
                   segmenter="alpha", model=None, model_sha256=None)
    if hint_box is not None:
        # A seller's box says where the product is: the backdrop elsewhere is not a rival to it.
        return _looks(rgb, hint_box, segmenter, None)
    # The whole photo's guide copy, made once: the first look, the larger look and the lookalike
    # judgement all read it (a 2000 px photo's INTER_AREA resize each).
    guide = _guide_copy(rgb)
    return _judge_lookalike(rgb, _looks(rgb, None, segmenter, guide), guide)


def _guide_copy(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` at :func:`guide_size` (itself when it is no larger)."""
    h, w = rgb.shape[:2]
    gw, gh = guide_size(h, w)
    return rgb if (gh, gw) == (h, w) else cv2.resize(rgb, (gw, gh), interpolation=cv2.INTER_AREA)


def _judge_lookalike(rgb: np.ndarray, cut: Cut, small: np.ndarray) -> Cut:
    """``cut`` with the ``backdrop_piece`` reason when the backdrop elsewhere looks as much like it.

    Judged on the final cut, after every look: a flag, not a trip to another look (the cut stays as
    it is). On the guide copy of the whole photo (``small``), so a closer look's crop does not hide
    the backdrop the cut is compared with.
    """
    h, w = rgb.shape[:2]
    gw, gh = guide_size(h, w)
    matte = cut.matte if (gh, gw) == (h, w) else cv2.resize(cut.matte, (gw, gh), interpolation=cv2.INTER_AREA)
    value = lookalike(small, matte >= 0.5)
    if not np.isfinite(value):
        return cut
    ramp = RAMPS["lookalike"]
    bad = ramp.badness(value)
    logger.debug("Backdrop lookalike %.2f (badness %.2f)", value, bad)
    reasons = cut.review_reasons
    if bad >= 0.5:
        reasons = reasons + (ReviewReason(ramp.code, ramp.message),)
    return replace(cut, confidence=round(min(cut.confidence, 1.0 - bad), 3), review_reasons=reasons)


def _looks(rgb: np.ndarray, hint_box: tuple[int, int, int, int] | None, segmenter: Segmenter,
           guide: np.ndarray | None) -> Cut:
    """The cut after every look (steps 2-8 of the module's list), before the final cut is judged;
    ``guide`` is the whole photo's guide copy (without a hint box)."""
    first = _cut(rgb, hint_box, segmenter, guide=guide)
    if hint_box is None and segmenter.learned and "uncertain_outline" in {r.code for r in first.review_reasons}:
        first = _rescue(rgb, first, segmenter)
    codes = {r.code for r in first.review_reasons}
    if hint_box is None and segmenter.learned and codes - FLAG_ONLY and not codes & NO_LARGER_LOOK:
        first = _larger_look(rgb, first, segmenter, guide)
    # A product well inside the frame is seen once more, cropped to its own box, so it fills more of
    # the model's 320 px (a crop would hide that a product runs off the frame or fills it, and a
    # faint or model-less cut has no box worth trusting).
    codes = {r.code for r in first.review_reasons}
    if hint_box is not None or not segmenter.learned or codes & NO_SECOND_LOOK:
        return first
    box = _second_look_box(first.matte)
    if box is None:
        return first
    try:
        second = _cut(rgb, box, segmenter, second_look=True)
    except EngineError:
        return first
    kept = _kept(first.matte >= 0.5, second.matte >= 0.5)
    logger.debug("Second look at %s: keeps %.2f of the first cut", box, kept)
    if kept < SECOND_LOOK_KEEP:
        # Either the crop lost the context that made the first pass see the product there, or the
        # first pass took in backdrop the closer look leaves out (a stethoscope's loops filled with
        # the paper behind them): the first cut stands, but two looks disagree about what the
        # product is, and on the evaluation set every such cut was wrong (docs/engine.md, "The
        # review flags re-checked").
        return replace(first, confidence=min(first.confidence, 0.4),
                       review_reasons=first.review_reasons + (DISAGREE_REASON,))
    second = _restore_unlike_pieces(rgb, first, second, guide if guide is not None else _guide_copy(rgb))
    # The first pass's doubt stands: a second look is a better cut, not a reason to trust it more.
    reasons = first.review_reasons + tuple(r for r in second.review_reasons if r not in first.review_reasons)
    return replace(second, confidence=min(first.confidence, second.confidence), review_reasons=reasons)


def _restore_unlike_pieces(rgb: np.ndarray, first: Cut, second: Cut, guide: np.ndarray) -> Cut:
    """``second`` with the pieces of ``first`` it left out put back, where RESTORE_* says they are
    the product and :func:`_shadow_like` does not say they are a shadow (the border likeness from
    ``guide``, the whole photo's guide copy; the pieces keep ``first``'s matte, so their soft edge
    is the first look's). The pieces are found at full resolution, inside the box of what was
    dropped: a thin piece (a stem, a plunger) is a few guide pixels across, and the 3x3 opening
    would take it there."""
    before, after = first.matte >= 0.5, second.matte >= 0.5
    dropped = before & ~after
    x, y, bw, bh = cv2.boundingRect(dropped.view(np.uint8))
    if bw == 0:
        return second
    h, w = before.shape
    m = 4  # the 7x7 "joins" test looks 3 px past the box
    x0, y0, x1, y1 = max(0, x - m), max(0, y - m), min(w, x + bw + m), min(h, y + bh + m)
    area = np.s_[y0:y1, x0:x1]
    pieces = cv2.morphologyEx(dropped[area].view(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(pieces, connectivity=8)
    floor = RESTORE_MIN_SHARE * max(np.count_nonzero(after), 1)
    candidates = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= floor]
    if not candidates:
        return second
    near = cv2.dilate(after[area].view(np.uint8), np.ones((7, 7), np.uint8)) > 0
    gh, gw = guide.shape[:2]
    like: np.ndarray | None = None  # the whole photo's, at the guide's size: made when first needed
    back = np.zeros((y1 - y0, x1 - x0), bool)
    for i in candidates:
        px, py, pw, ph = (int(v) for v in stats[i, :4])
        box = np.s_[py:py + ph, px:px + pw]
        piece = labels[box] == i
        if not (piece & near[box]).any():
            continue
        full = np.s_[y0 + py:y0 + py + ph, x0 + px:x0 + px + pw]
        if float(first.matte[full][piece].mean()) < RESTORE_MIN_MATTE:
            continue
        if second.shadow is not None and float(second.shadow[full][piece].mean()) >= RESTORE_MAX_SHADOW:
            continue
        if like is None:
            like = border_likeness(guide)
        ys, xs = np.nonzero(piece)
        gy = np.minimum(((ys + y0 + py + 0.5) * gh / h).astype(np.intp), gh - 1)
        gx = np.minimum(((xs + x0 + px + 0.5) * gw / w).astype(np.intp), gw - 1)
        if float(like[gy, gx].mean()) > RESTORE_LIKENESS:
            continue
        if _shadow_like(rgb, piece, (y0 + py, x0 + px), before | after):
            continue
        back[box] |= piece
    if not back.any():
        return second
    # The first cut's matte over the piece and its soft rim, never below the second's.
    rim = cv2.dilate(back.view(np.uint8), np.ones((5, 5), np.uint8)) > 0
    matte = second.matte.copy()
    region = matte[area]
    region[rim] = np.maximum(region[rim], first.matte[area][rim])
    logger.debug("Second look: %d px of the first cut put back", int(np.count_nonzero(back)))
    return replace(second, matte=matte)


def _shadow_like(rgb: np.ndarray, piece: np.ndarray, at: tuple[int, int], cuts: np.ndarray) -> bool:
    """Whether ``piece`` (bool, its top-left corner at ``at`` = (row, column) of ``rgb``) is the floor
    darkened: darker than the backdrop around it (within RESTORE_RING px, outside ``cuts``), with
    that backdrop's chroma shrunk at most in proportion, as :func:`.shadow.cast_shadow` judges a
    shadow (:func:`.shadow.darkened_floor`). A shadow's colours are the border's darkened, which the border likeness (16 levels of
    L*) reads as colours the border lacks; the second look's own shadow map misses one it did not
    find (a key's shadow on brick)."""
    h, w = cuts.shape
    ph, pw = piece.shape
    r = RESTORE_RING
    top, left = at
    y0, x0 = max(0, top - r), max(0, left - r)
    y1, x1 = min(h, top + ph + r), min(w, left + pw + r)
    part = np.zeros((y1 - y0, x1 - x0), np.uint8)
    part[top - y0:top - y0 + ph, left - x0:left - x0 + pw] = piece
    ring = (cv2.dilate(part, np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0) & ~cuts[y0:y1, x0:x1]
    if not ring.any():
        return False
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb[y0:y1, x0:x1], (0, 0), 1.5), cv2.COLOR_RGB2LAB).astype(np.float32)
    inside, around = lab[part > 0].mean(axis=0), lab[ring].mean(axis=0)
    darker = float(around[0] - inside[0])
    floor_l = max(float(around[0]), 1.0)
    floor_chroma = float(np.hypot(around[1] - 128, around[2] - 128))
    shift = float(np.hypot(inside[1] - around[1], inside[2] - around[2]))
    # The local ring is the floor itself (no surface fit, no noise measure): spread 2, the floor
    # of cast_shadow's tolerances.
    return bool(darkened_floor(darker, floor_l, floor_chroma, shift, 2.0))


def _kept(before: np.ndarray, after: np.ndarray) -> float:
    """The share of the product mask ``before`` that ``after`` keeps (how a later look is judged)."""
    return np.count_nonzero(before & after) / max(np.count_nonzero(before), 1)


def _stand_out(mask: np.ndarray, like: np.ndarray) -> float:
    """How much ``mask`` stands out from its surroundings by colour: the mean border likeness of a
    ring around it minus that of the mask (about 0.5-0.9 for a product on its backdrop, about 0 for
    a piece of the backdrop)."""
    m = mask.view(np.uint8)
    if not m.any():
        return -1.0
    r = max(3, round(0.05 * max(m.shape)))
    ring = (cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0) & ~mask
    return float(like[ring].mean() - like[mask].mean()) if ring.any() else 0.0


def _rescue(rgb: np.ndarray, first: Cut, segmenter: Segmenter) -> Cut:
    """A better cut than ``first`` when it picked the backdrop, else ``first``.

    The model is run again on the box (plus a margin) of each of the biggest blobs of colours the
    frame's border does not show; a candidate wins when its product stands out from its
    surroundings clearly more than the first cut's. The first cut's reasons stay, and the
    replacement says what happened.
    """
    work = _downscale(rgb).rgb
    wh, ww = work.shape[:2]
    like = border_likeness(work)

    def small(matte: np.ndarray) -> np.ndarray:
        return cv2.resize((matte >= 0.5).view(np.uint8) if matte.dtype == bool else (matte >= 0.5).astype(np.uint8),
                          (ww, wh), interpolation=cv2.INTER_NEAREST) > 0

    mask = small(first.matte)
    if not mask.any() or float(like[mask].mean()) < RESCUE_LIKENESS:
        return first
    distinct = cv2.morphologyEx((like < DISTINCT_LIKENESS).view(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(distinct, connectivity=8)
    blobs = sorted((i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= DISTINCT_MIN_SHARE * wh * ww),
                   key=lambda i: -stats[i, cv2.CC_STAT_AREA])[:RESCUE_TRIES]
    first_score = _stand_out(mask, like)
    if first_score < RESCUE_MIN_FIRST:
        return first
    h, w = rgb.shape[:2]
    sx, sy = w / ww, h / wh
    best, best_score = first, first_score + RESCUE_MIN_GAIN
    for i in blobs:
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        m = SECOND_LOOK_MARGIN * max(bw * sx, bh * sy)
        box = (max(0, int(x * sx - m)), max(0, int(y * sy - m)),
               min(w, int(np.ceil((x + bw) * sx + m))), min(h, int(np.ceil((y + bh) * sy + m))))
        try:
            cand = _cut(rgb, box, segmenter, second_look=True)
        except EngineError:
            continue
        score = _stand_out(small(cand.matte), like)
        logger.debug("Rescue look at %s: stands out %.2f (first %.2f), confidence %.2f", box, score,
                     best_score - RESCUE_MIN_GAIN, cand.confidence)
        if score >= best_score and cand.confidence >= RESCUE_MIN_CONFIDENCE:
            best, best_score = cand, score
    if best is first:
        return first
    best = _grow_rescue(rgb, best, segmenter, small, like, first_score + RESCUE_MIN_GAIN)
    reasons = first.review_reasons + (RESCUE_REASON,) + tuple(
        r for r in best.review_reasons if r not in first.review_reasons)
    return replace(best, confidence=min(first.confidence, best.confidence, 0.4), review_reasons=reasons)


def _grow_rescue(rgb: np.ndarray, cut: Cut, segmenter: Segmenter, small: Callable[[np.ndarray], np.ndarray],
                 like: np.ndarray, floor: float) -> Cut:
    """``cut`` (a rescue's winner) seen again at its own box plus a margin, while that grows it.

    The rescue's view is the distinct blob's box plus a margin and the model's map is clipped to
    it, so a product part with the backdrop's colours beyond it (a guitar's dark neck above its
    body on charred bark) is cut off. Each wider look must pass the test the rescue passed (stand
    out by ``floor``, the model not unsure) and keep the previous cut (SECOND_LOOK_KEEP), else the
    previous cut stands: a wider view that takes the bark again fails it.
    """
    for _ in range(RESCUE_GROW_LOOKS):
        box = _second_look_box(cut.matte)
        if box is None:
            break
        try:
            wider = _cut(rgb, box, segmenter, second_look=True)
        except EngineError:
            break
        before, after = cut.matte >= 0.5, wider.matte >= 0.5
        kept = _kept(before, after)
        score = _stand_out(small(wider.matte), like)
        logger.debug("Rescue grown to %s: keeps %.2f, stands out %.2f (floor %.2f), confidence %.2f",
                     box, kept, score, floor, wider.confidence)
        if kept < SECOND_LOOK_KEEP or score < floor or wider.confidence < RESCUE_MIN_CONFIDENCE:
            break
        grew = np.count_nonzero(after) > RESCUE_GROWTH * np.count_nonzero(before)
        cut = wider
        if not grew:
            break
    return cut


def _larger_look(rgb: np.ndarray, first: Cut, segmenter: Segmenter, guide: np.ndarray | None) -> Cut:
    """``first`` cut again with the model at :data:`LARGER_SIDE`; the flag and its reasons stay.

    The larger cut replaces the first one: measured on the evaluation set (docs/engine.md, "The
    model at a larger input") it is at least as good on most doubted cuts, and the review signals
    of either view do not tell which of the two is better. But not when it runs off the frame
    where the first cut kept clear of it (``touches_frame``'s own lines): the larger view had then
    taken in a stretch of the backdrop that reaches the frame (a slab of charred bark beside a
    guitar, 0.24 against the first cut's 0.92). An operator's model that cannot run at that size
    keeps the first cut.
    """
    try:
        big = _cut(rgb, None, replace(segmenter, side=LARGER_SIDE), guide=guide)
    except EngineError:
        return first
    except ModelCannotRun as exc:
        logger.info("Segmenter %s cannot run at %d px (%s); keeping its %d px cut", segmenter.name,
                    LARGER_SIDE, exc, segmenter.side)
        return first
    clear, reaches = RAMPS["frame_contact"].good, RAMPS["frame_contact"].bad
    if frame_contact(first.matte >= 0.5) < clear and frame_contact(big.matte >= 0.5) >= reaches:
        logger.debug("The larger look runs off the frame where the first cut does not: the first cut stays")
        return first
    reasons = first.review_reasons + tuple(r for r in big.review_reasons if r not in first.review_reasons)
    return replace(big, confidence=min(first.confidence, big.confidence), review_reasons=reasons)


def _second_look_box(matte: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box a second model pass looks at: the first cut's box plus a margin, when that is
    enough smaller than the photo for the model to see the product at a better resolution."""
    h, w = matte.shape
    x, y, bw, bh = cv2.boundingRect((matte >= 0.5).astype(np.uint8))
    if bw == 0 or bh == 0:
        return None
    m = round(SECOND_LOOK_MARGIN * max(bw, bh))
    x0, y0, x1, y1 = max(0, x - m), max(0, y - m), min(w, x + bw + m), min(h, y + bh + m)
    if (x1 - x0) * (y1 - y0) > SECOND_LOOK_MAX_SHARE * w * h:
        return None
    return x0, y0, x1, y1


def _closer_look(rgb: np.ndarray, box: tuple[int, int, int, int], segmenter: Segmenter) -> Cut | None:
    """The cut of a faint product at ``box``, flagged; None when the closer look finds nothing either.

    Inside the box the model may still see too little (a key 0.2 % of a burlap photo); the backdrop
    model then cuts it, which works there because the box holds little but the product and the
    backdrop around it. Either way the cut is flagged.
    """
    try:
        cut = _cut(rgb, box, segmenter, second_look=True)
    except EngineError:
        return None
    logger.debug("A faint model answer: closer look at %s", box)
    return replace(cut, confidence=min(cut.confidence, 0.4), review_reasons=(FAINT_REASON,) + cut.review_reasons)


def _cut(rgb: np.ndarray, hint_box: tuple[int, int, int, int] | None, segmenter: Segmenter,
         *, second_look: bool = False, guide: np.ndarray | None = None) -> Cut:
    """One look at ``hint_box`` (or the whole photo); ``guide`` is the whole photo's guide copy,
    used when the look is of the whole photo."""
    h, w = rgb.shape[:2]
    region = _region(rgb.shape, hint_box)
    x0, y0, x1, y1 = region
    sub = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    box_in_region = None
    if hint_box is not None:
        bx0, by0, bx1, by1 = (int(v) for v in hint_box)
        box_in_region = (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0)

    work = _downscale(sub).rgb
    found: tuple[np.ndarray, np.ndarray, np.ndarray, Assessment] | None = None
    if segmenter.learned:
        share = (x1 - x0) * (y1 - y0) / (h * w) if second_look else 1.0
        answer = _learned(sub, work, segmenter, box_in_region, share,
                          guide if hint_box is None else None)
        if not isinstance(answer, _Faint):
            found = answer
        elif answer.box is not None and hint_box is None:
            closer = _closer_look(rgb, answer.box, segmenter)
            if closer is not None:
                return closer
    if found is None:
        try:
            found = _classical(sub)
        except EngineError:
            if not segmenter.learned:
                raise
            raise no_product("No product stands out from the background.") from None
        except cv2.error as exc:
            # A photo too odd for GrabCut (a thin strip): nothing found rather than a crash.
            logger.warning("Classical segmentation failed on a %dx%d region: %s", x1 - x0, y1 - y0, exc)
            raise no_product("No product stands out from the background.") from None
        if segmenter.learned:
            matte, product, small, assessment = found
            found = (matte, product, small, assess(assessment.signals, (ReviewReason(
                "model_found_nothing",
                "The product model found nothing; this cut comes from the backdrop model alone."),)))
    matte_r, product, small, assessment = found
    shadow_r = _shadow(work, product, matte_r) if min(small.shape[:2]) >= 8 else None
    matte = _place((h, w), region, matte_r)
    _clip_to_box(matte, hint_box)
    if not (matte > 0).any():
        raise no_product("No product stands out from the background.")
    shadow = _place((h, w), region, shadow_r) if shadow_r is not None else None
    if shadow is not None:
        _clip_to_box(shadow, hint_box)
    logger.debug("Cut with %s: confidence %.2f, signals %s", segmenter.name, assessment.confidence,
                 {k: round(v, 3) for k, v in assessment.signals.items()})
    return Cut(matte=matte, shadow=shadow, confidence=assessment.confidence,
               review_reasons=assessment.reasons, segmenter=segmenter.name, model=segmenter.model,
               model_sha256=segmenter.model_sha256)
