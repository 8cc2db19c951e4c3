"""Whether a person should look at a cut-out: signals that predict a wrong cut, and a confidence.

Each signal is measured on the product mask at the guide resolution (see
:mod:`generation.engine.refine`) and mapped to a "badness" between 0 (a good
cut looks like this) and 1 (a wrong cut looks like this) by a linear ramp
between two thresholds. The confidence is ``1 - max(badness)``; a signal at
or above half way gives a :class:`ReviewReason`, and a cut with any reason
needs review. The thresholds were calibrated on composites with a known
mask (docs/engine.md, "Review signals", has the figures).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .segment import border_likeness


@dataclass(frozen=True)
class ReviewReason:
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Ramp:
    """Badness 0 at ``good``, 1 at ``bad`` (either direction), and the reason given past half way."""

    good: float
    bad: float
    code: str
    message: str

    def badness(self, value: float) -> float:
        if self.good == self.bad:
            return float(value >= self.bad)
        return float(np.clip((value - self.good) / (self.bad - self.good), 0.0, 1.0))


#: Calibrated thresholds (docs/engine.md, "Review signals").
RAMPS: dict[str, Ramp] = {
    "edge_uncertainty": Ramp(1.6, 2.4, "uncertain_outline",
                             "The product's outline is uncertain (a busy or similar-coloured backdrop)."),
    "uncertainty": Ramp(0.5, 1.0, "uncertain_product",
                        "The product model is unsure about much of the product."),
    "frame_contact": Ramp(0.01, 0.05, "touches_frame",
                          "The product runs off the edge of the photo, so part of it may be missing."),
    # Since every product inside the frame gets a closer look, 0.3-0.7 % of the photo (a coin, a tennis
    # ball) is cut at IoU 0.96-0.99; under 0.25 % (a key) a cut still often fails.
    "tiny": Ramp(0.004, 0.001, "tiny_product", "The product found is very small in the photo."),
    "huge": Ramp(0.75, 0.92, "fills_frame",
                 "The product found fills almost the whole photo, so some backdrop may be left in."),
    "parts": Ramp(2.0, 4.0, "many_parts", "The cut-out is in several separate pieces."),
    "holes": Ramp(2.0, 5.0, "holes", "The cut-out has several holes through it."),
    "fill": Ramp(0.12, 0.05, "unusual_shape", "The cut-out is unusually thin or scattered for a product."),
    "edge_contrast": Ramp(8.0, 4.0, "low_contrast",
                          "The product barely differs from its backdrop along its outline."),
    "enclosed_backdrop": Ramp(0.10, 0.26, "backdrop_inside",
                              "Part of the cut-out, enclosed by the product, has the backdrop's colours "
                              "and texture: the backdrop may show through gaps in the product."),
    # The model's belief beside the outline, over the cut's area: good cuts of the development seeds
    # at most 0.021, a bass guitar whose neck the model half-saw 0.078 (docs/engine.md, "A part
    # the model saw left out").
    "outside_mass": Ramp(0.015, 0.045, "part_left_out",
                         "The product model saw more of the product beyond the cut-out's outline: a part "
                         "may be missing."),
    # Patches of the cut that look like the backdrop beside it as much as the backdrop looks like
    # itself: good cuts of the development seeds at most 0.035 but for a see-through glass, a
    # tricycle, a saw and a trophy cut wrong 0.09-0.14 (docs/engine.md, "A gap filled with the backdrop").
    "filled_gap": Ramp(0.04, 0.12, "gap_filled",
                       "Part of the cut-out looks just like the backdrop beside the product: a gap of the "
                       "product may be filled with the backdrop, or a part of it missing."),
    # Backdrop pieces (a pebble of the gravel, a patch of the machine) measured 0.25-1.24 on the
    # development seeds' full-frame looks, good cuts 1.83 and up (docs/engine.md, "A piece of the
    # backdrop"). Judged by cut.cut_product on the final cut, not by measure().
    "lookalike": Ramp(1.6, 0.8, "backdrop_piece",
                      "The cut-out looks like the backdrop elsewhere in the photo: it may be a piece of "
                      "the backdrop rather than the product."),
}
#: Measured and logged but not judged: on the calibration set they did not
#: separate good cuts from wrong ones (see docs/engine.md).
UNJUDGED = ("disagreement", "backdrop_like", "model_range")


@dataclass(frozen=True)
class Assessment:
    confidence: float
    reasons: tuple[ReviewReason, ...]
    signals: dict[str, float]


def assess(signals: dict[str, float], extra: tuple[ReviewReason, ...] = ()) -> Assessment:
    """Confidence and reasons from measured ``signals`` (keys of :data:`RAMPS`; missing ones are not judged)."""
    worst = 0.0
    reasons: list[ReviewReason] = list(extra)
    for key, value in signals.items():
        ramp = RAMPS.get(key)
        if ramp is None or not np.isfinite(value):
            continue
        bad = ramp.badness(value)
        worst = max(worst, bad)
        if bad >= 0.5:
            reasons.append(ReviewReason(ramp.code, ramp.message))
    confidence = 1.0 - worst
    if extra:
        confidence = min(confidence, 0.4)
    return Assessment(round(confidence, 3), tuple(reasons), signals)


def frame_contact(mask: np.ndarray) -> float:
    """The share of the photo's outermost pixels that ``mask`` (HxW bool) covers."""
    edge = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]]) if mask.shape[0] > 1 else mask[0]
    return float(np.count_nonzero(edge)) / max(edge.size, 1)


def _edge_contrast(lab: np.ndarray, mask: np.ndarray) -> float:
    """Median Lab distance between the local product and backdrop colours along the outline."""
    m = mask.view(np.uint8)
    k = np.ones((3, 3), np.uint8)
    inside = (m & ~cv2.erode(m, k) & 1).astype(np.float32)
    outside = ((cv2.dilate(m, k) & ~m) & 1).astype(np.float32)
    size = (11, 11)
    w_in = cv2.boxFilter(inside, -1, size, normalize=False)
    w_out = cv2.boxFilter(outside, -1, size, normalize=False)
    both = (inside > 0) & (w_out > 0)
    if not both.any():
        return float("nan")
    mean_in = cv2.boxFilter(lab * inside[..., None], -1, size, normalize=False)[both] / w_in[both][:, None]
    mean_out = cv2.boxFilter(lab * outside[..., None], -1, size, normalize=False)[both] / w_out[both][:, None]
    return float(np.median(np.linalg.norm(mean_in - mean_out, axis=1)))


#: A pixel has the backdrop's colour above this border likeness (segment.border_likeness); a patch of
#: it counts when it is at least ENCLOSED_MIN_SHARE of the product, ENCLOSED_RING of the pixels just
#: around it are product pixels of other colours, and its texture (median local grey-level spread,
#: 5x5) is at least ENCLOSED_TEXTURE of the backdrop's at the frame's border and at least
#: ENCLOSED_MIN_TEXTURE grey levels: smooth patches (a white ball's lit side on white paper) are not
#: backdrop showing through, unless the product walling them (its pixels of other colours within 4 px)
#: is at least ENCLOSED_WALL_CONTRAST Lab units from their colour: a plain backdrop (paper) seen
#: through the loops of a dark tube, not one surface in light and shade (a white ball's lit side
#: against its own rim measured 0.5-16 on seeds 0-3 and 5-7, paper in a stethoscope's loops 56-120).
#: The texture test stays for them: a smooth patch counts only when the backdrop at the border is as
#: smooth, so the crema in a cup on a grained wood table (the crema has the wood's colour, not its
#: grain) is not backdrop.
ENCLOSED_LIKENESS, ENCLOSED_MIN_SHARE, ENCLOSED_RING = 0.5, 0.01, 0.7
ENCLOSED_TEXTURE, ENCLOSED_MIN_TEXTURE = 0.6, 3.0
ENCLOSED_WALL_CONTRAST = 40.0
_WALL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))


def _local_spread(grey: np.ndarray) -> np.ndarray:
    mean = cv2.blur(grey, (5, 5))
    return np.sqrt(np.maximum(cv2.blur(grey * grey, (5, 5)) - mean * mean, 0.0))


def _backdrop_coloured_patches(rgb: np.ndarray, mask: np.ndarray, like_map: np.ndarray | None
                               ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """The cut's pixels in the backdrop's colours, opened by 3x3 so a speck does not count, and
    their connected patches: ``(like, count, labels, stats)`` as cv2 gives them."""
    like = (border_likeness(rgb) if like_map is None else like_map) > ENCLOSED_LIKENESS
    patches = cv2.morphologyEx((like & mask).view(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(patches, connectivity=8)
    return like, count, labels, stats


def _backdrop_texture(spread: np.ndarray, mask: np.ndarray) -> float:
    """ENCLOSED_TEXTURE x the median grey spread of the backdrop along the frame (a band of 3 % of
    the longer side): a patch as textured as that is as textured as the backdrop."""
    h, w = mask.shape
    b = max(3, round(0.03 * max(h, w)))
    border = np.zeros_like(mask)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    backdrop = border & ~mask
    return ENCLOSED_TEXTURE * float(np.median(spread[backdrop])) if backdrop.any() else 0.0


def _enclosed_backdrop(rgb: np.ndarray, mask: np.ndarray, *, like_map: np.ndarray | None = None,
                       spread: np.ndarray | None = None) -> float:
    """Share of the product taken by patches of backdrop that the product encloses.

    The cut of an open product (a trumpet's loops of tube, a guitar's neck and strings against
    bark) can fill its gaps with the backdrop behind them, and the model is sure of it: its
    outline follows the product's outer edge. Inside, those gaps have the backdrop's colours and
    its texture (wood grain, gravel) and are surrounded by the product's own colours. A white ball
    on white paper has the backdrop's colour but no texture and is not enclosed by other colours; a
    label has texture, in its own colours. On a plain backdrop the gaps are as smooth as the
    backdrop (the paper inside a stethoscope's loops): such a patch counts when the product walling
    it is a different material, far from its colour.
    """
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    like, count, labels, stats = _backdrop_coloured_patches(rgb, mask, like_map)
    if count <= 1:
        return 0.0
    if spread is None:
        spread = _local_spread(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32))
    h, w = mask.shape
    like_border = _backdrop_texture(spread, mask)
    floor = max(like_border, ENCLOSED_MIN_TEXTURE)
    other = mask & ~like
    lab: np.ndarray | None = None
    enclosed = 0
    for i in range(1, count):
        if stats[i, cv2.CC_STAT_AREA] < ENCLOSED_MIN_SHARE * area:
            continue
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        x0, y0, x1, y1 = max(0, x - 4), max(0, y - 4), min(w, x + bw + 4), min(h, y + bh + 4)
        patch = labels[y0:y1, x0:x1] == i
        ring = (cv2.dilate(patch.view(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~patch
        if not ring.any() or other[y0:y1, x0:x1][ring].mean() < ENCLOSED_RING:
            continue
        texture = float(np.median(spread[y0:y1, x0:x1][patch]))
        if texture >= floor:
            enclosed += int(stats[i, cv2.CC_STAT_AREA])
        elif texture >= like_border:
            # As smooth as a smooth backdrop: counted when a different material walls it.
            if lab is None:
                lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
            box = lab[y0:y1, x0:x1]
            wall = (cv2.dilate(patch.view(np.uint8), _WALL) > 0) & ~patch & other[y0:y1, x0:x1]
            if wall.any() and float(np.linalg.norm(box[patch].mean(axis=0) - box[wall].mean(axis=0))) \
                    >= ENCLOSED_WALL_CONTRAST:
                enclosed += int(stats[i, cv2.CC_STAT_AREA])
    return enclosed / area


#: The cut is compared with LOOKALIKE_COPIES copies of its own mask moved to places whose box keeps
#: LOOKALIKE_MARGIN x its box's longer side away from its box; with fewer than LOOKALIKE_MIN_COPIES
#: such places (a product too large for the frame to hold copies of it) it is not judged. At most
#: LOOKALIKE_SAMPLES pixels of the mask are compared (the histograms barely move, the time does).
LOOKALIKE_COPIES, LOOKALIKE_MIN_COPIES, LOOKALIKE_MARGIN = 24, 6, 0.25
LOOKALIKE_SAMPLES = 4000
#: Added to the copies' spread among themselves: on a plain backdrop (white paper) the copies are
#: alike to within sampling noise, and any product differs from them by far more than that.
LOOKALIKE_FLOOR = 0.02
#: Joint Lab colour (4 x 6 x 6 bins), gradient magnitude and 5x5 grey spread (8 log2 bins each).
_LOOKALIKE_BINS = (144, 8, 8)


def _histograms(codes: tuple[np.ndarray, ...], ys: np.ndarray, xs: np.ndarray) -> list[np.ndarray]:
    out = []
    for code, bins in zip(codes, _LOOKALIKE_BINS):
        h = np.bincount(code[ys, xs], minlength=bins).astype(np.float64)
        out.append(h / max(h.sum(), 1.0))
    return out


def _descriptor_codes(rgb: np.ndarray, lab: np.ndarray | None = None, grey: np.ndarray | None = None,
                      spread: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel, its bin in each of the three histograms (Lab colour, gradient, grey spread);
    ``lab`` (OpenCV's 8-bit scale), ``grey`` (float32) and ``spread`` when the caller has them."""
    if lab is None:
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    lab = lab.astype(np.int32)
    colour = ((lab[..., 0] * 4) >> 8) * 36 + ((lab[..., 1] * 6) >> 8) * 6 + ((lab[..., 2] * 6) >> 8)
    if grey is None:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gradient = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    return (colour,
            np.clip(np.log2(1.0 + gradient / 2.0), 0, 7).astype(np.int32),
            np.clip(np.log2(1.0 + (_local_spread(grey) if spread is None else spread)), 0, 7).astype(np.int32))


def _nearest_over_spread(region: list[np.ndarray], copies: list[list[np.ndarray]]) -> list[float]:
    """Per descriptor, the region's distance (total variation) to its nearest copy over the median
    distance between the copies (+ LOOKALIKE_FLOOR)."""
    pairs = np.triu_indices(len(copies), 1)
    ratios = []
    for k in range(len(region)):
        many = np.stack([c[k] for c in copies])
        to_region = 0.5 * np.abs(many - region[k]).sum(axis=1)
        between = 0.5 * np.abs(many[:, None, :] - many[None, :, :]).sum(axis=2)[pairs]
        ratios.append(float(to_region.min()) / (float(np.median(between)) + LOOKALIKE_FLOOR))
    return ratios


def lookalike(rgb: np.ndarray, mask: np.ndarray) -> float:
    """How much more the cut differs from the backdrop than the backdrop differs from itself.

    A model can be sure of one pebble of a gravel backdrop, or a patch of a machine, as the product:
    its outline is crisp, it is one part, nothing encloses it. But the backdrop could have produced
    that region anywhere: the same mask moved elsewhere in the frame covers colours and texture as
    close to it as the moved copies are to each other. A product differs from its backdrop in colour
    or in texture (a white ball on white paper: smooth shading against paper grain). Each of three
    descriptors (Lab colour, gradient magnitude and local grey spread histograms of the mask's core)
    gives the distance (total variation) from the cut to its nearest copy over the median distance
    between copies; the signal is the largest of the three, since a product needs to differ in one
    only. NaN (not judged) when the frame has no room for enough copies.
    """
    h, w = mask.shape
    m = mask.view(np.uint8)
    x, y, bw, bh = cv2.boundingRect(m)
    if bw == 0 or bw >= w or bh >= h:
        return float("nan")
    # The core, so that the outline's mix of product and backdrop does not count as the product's.
    core = cv2.erode(m, np.ones((5, 5), np.uint8)) > 0
    ys, xs = np.nonzero(core if np.count_nonzero(core) >= 30 else mask)
    rng = np.random.default_rng(0)  # the same photo gives the same answer
    if ys.size > LOOKALIKE_SAMPLES:
        pick = rng.choice(ys.size, LOOKALIKE_SAMPLES, replace=False)
        ys, xs = ys[pick], xs[pick]
    g = round(LOOKALIKE_MARGIN * max(bw, bh))
    cx = rng.integers(0, w - bw + 1, 16 * LOOKALIKE_COPIES)
    cy = rng.integers(0, h - bh + 1, 16 * LOOKALIKE_COPIES)
    away = (cx + bw <= x - g) | (cx >= x + bw + g) | (cy + bh <= y - g) | (cy >= y + bh + g)
    cx, cy = cx[away][:LOOKALIKE_COPIES], cy[away][:LOOKALIKE_COPIES]
    if cx.size < LOOKALIKE_MIN_COPIES:
        return float("nan")
    codes = _descriptor_codes(rgb)
    cut = _histograms(codes, ys, xs)
    copies = [_histograms(codes, ys + int(b - y), xs + int(a - x)) for a, b in zip(cx, cy)]
    return max(_nearest_over_spread(cut, copies))


#: A backdrop-coloured, backdrop-textured patch of the cut (the tests of _enclosed_backdrop but the
#: enclosure, and at least GAP_MIN_SHARE of it) counts as a filled gap when its core (eroded 2 px,
#: at most GAP_SAMPLES pixels) is no further from the nearest of GAP_COPIES copies of itself moved
#: onto the backdrop (each at least 3 px off the cut; GAP_TRIES random places tried, at least
#: GAP_MIN_COPIES found) than GAP_LOOKALIKE x the copies' median distance among themselves, in each
#: of lookalike()'s three descriptors. Bridged gaps and leftovers measured 0.23-0.53 on the
#: development seeds; product parts with the backdrop's colours mostly over 0.6.
GAP_COPIES, GAP_MIN_COPIES, GAP_TRIES, GAP_SAMPLES = 24, 6, 400, 2000
GAP_LOOKALIKE = 0.5
#: Only patches of at least this share of the cut are judged: a textured product has small patches
#: with the backdrop's colours and grain (a ginger's skin on a shelf: five of 1-3.4 % each, 0.094 in
#: all, on known seed 3); a bridged gap measured 3.2-10.9 % each.
GAP_MIN_SHARE = 0.03
_OFF_CUT = np.ones((7, 7), np.uint8)


def _patch_lookalike(ys: np.ndarray, xs: np.ndarray, off_cut: np.ndarray, codes: tuple[np.ndarray, ...],
                     rng: np.random.Generator) -> float:
    """The largest of the three nearest-copy ratios of the pixels ``ys, xs`` against copies of them
    moved where ``off_cut`` is false; NaN when fewer than GAP_MIN_COPIES such places were found."""
    h, w = off_cut.shape
    if ys.size > GAP_SAMPLES:
        pick = rng.choice(ys.size, GAP_SAMPLES, replace=False)
        ys, xs = ys[pick], xs[pick]
    y0, x0, y1, x1 = int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())
    dys = rng.integers(-y0, h - y1, GAP_TRIES)
    dxs = rng.integers(-x0, w - x1, GAP_TRIES)
    places: list[tuple[int, int]] = []
    for start in range(0, GAP_TRIES, 50):
        dy, dx = dys[start:start + 50, None], dxs[start:start + 50, None]
        # A copy may graze the cut's surroundings by a few pixels, not take in the product.
        free = off_cut[ys[None, :] + dy, xs[None, :] + dx].mean(axis=1) <= 0.02
        places += [(int(a), int(b)) for a, b in zip(dy[free, 0], dx[free, 0])]
        if len(places) >= GAP_COPIES:
            break
    places = places[:GAP_COPIES]
    if len(places) < GAP_MIN_COPIES:
        return float("nan")
    region = _histograms(codes, ys, xs)
    copies = [_histograms(codes, ys + dy, xs + dx) for dy, dx in places]
    return max(_nearest_over_spread(region, copies))


def _filled_gaps(rgb: np.ndarray, mask: np.ndarray, *, like_map: np.ndarray | None = None,
                 spread: np.ndarray | None = None, lab: np.ndarray | None = None,
                 grey: np.ndarray | None = None) -> float:
    """Share of the product taken by patches that look like the backdrop off the cut as much as the
    backdrop looks like itself.

    A cut that bridges a gap of an open product (the sand between a tricycle's tubes, the fabric in
    a trophy's handle) keeps the backdrop there, and the model is sure of it; when the gap opens
    onto the outline, or is small, `enclosed_backdrop` does not count it. Such a patch is the
    backdrop: moved elsewhere on the backdrop, its colours, gradients and grain match some copy as
    closely as two copies match each other. A part of the product with the backdrop's colours (a
    guitar's wood on bark, a grey pitcher on a grey cliff) still differs from the backdrop in its
    texture or its shading, and a smooth patch (a white ball's lit side on paper) is not judged, as
    in `enclosed_backdrop`. ``like_map``, ``spread``, ``lab`` and ``grey`` are the photo's border
    likeness, 5x5 grey spread, 8-bit Lab and grey copy when the caller has them.
    """
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    _, count, labels, stats = _backdrop_coloured_patches(rgb, mask, like_map)
    big = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= GAP_MIN_SHARE * area]
    if not big:
        return 0.0
    if grey is None:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if spread is None:
        spread = _local_spread(grey)
    floor = max(_backdrop_texture(spread, mask), ENCLOSED_MIN_TEXTURE)
    off_cut = cv2.dilate(mask.view(np.uint8), _OFF_CUT) > 0
    codes: tuple[np.ndarray, ...] | None = None
    rng = np.random.default_rng(0)  # the same photo gives the same answer
    filled = 0
    for i in big:
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        patch = labels[y:y + bh, x:x + bw] == i
        if float(np.median(spread[y:y + bh, x:x + bw][patch])) < floor:
            continue
        if codes is None:
            codes = _descriptor_codes(rgb, lab, grey, spread)
        # The core: the patch's rim mixes in the product walling it.
        core = cv2.erode(patch.view(np.uint8), np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT,
                         borderValue=0) > 0
        ys, xs = np.nonzero(core if np.count_nonzero(core) >= 30 else patch)
        if _patch_lookalike(ys + y, xs + x, off_cut, codes, rng) <= GAP_LOOKALIKE:
            filled += int(stats[i, cv2.CC_STAT_AREA])
    return filled / area


def side_scale(shape: tuple[int, ...], model_side: int, photo_side: int | None) -> float:
    """Guide pixels per unit of the coarser of the model's and the photo's pixels."""
    side = max(shape[:2])
    return max(side / float(model_side), side / float(photo_side or side))


#: Beyond this many (coarser) pixels outside the outline the blur of the model's map at a true edge
#: has died out; a model probability of at least OUTSIDE_MIN_PROB there is a belief, not a blur. Only
#: belief that starts within OUTSIDE_REACH x the cut's box's longer side of the cut counts: further
#: away it is another thing the model half-saw, not a part of this product.
OUTSIDE_GAP, OUTSIDE_MIN_PROB, OUTSIDE_REACH = 2.0, 0.15, 0.5


def _outside_mass(mask: np.ndarray, prob: np.ndarray, scale: float) -> float:
    """The model's belief left beside the cut: its probability summed over the pixels more than
    OUTSIDE_GAP (coarser) pixels beyond the outline where it is at least OUTSIDE_MIN_PROB, in
    patches that start within OUTSIDE_REACH of the cut's size from it, over the cut's area.

    A part of the product with the backdrop's colours (a bass guitar's wooden neck on bark) can be
    half-seen by the model, at 0.2-0.45, and fall under the cut's 0.5 line as a whole: the cut is
    crisp, one part, and sure of what it kept. Around a true outline the map falls from 1 to 0
    within a model pixel or two (the upsampled blur of its 320 px), so what is left further out is
    a belief that the product goes on there, not the edge's blur. The half-seen part need not touch
    the cut (the neck's belief began 46 guide px above the body it was cut from); a patch of the
    backdrop the model half-saw across the frame from a small product (a coin on wood, 460 px away)
    is not part of it. ``scale`` is guide pixels per coarser pixel (:func:`side_scale`).
    """
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    d = cv2.distanceTransform((~mask).view(np.uint8), cv2.DIST_L2, 3)
    far = (d > OUTSIDE_GAP * scale) & (prob >= OUTSIDE_MIN_PROB)
    if not far.any():
        return 0.0
    _, _, bw, bh = cv2.boundingRect(mask.view(np.uint8))
    count, labels = cv2.connectedComponents(far.view(np.uint8), connectivity=8)
    start = np.full(count, np.inf, np.float32)
    np.minimum.at(start, labels[far], d[far])
    near = start <= OUTSIDE_REACH * max(bw, bh)
    near[0] = False
    return float(prob[far & near[labels]].sum()) / area


def _holes(mask: np.ndarray) -> int:
    """Enclosed background regions bigger than 0.5 % of the product."""
    inverse = (~mask).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inverse, connectivity=4)
    h, w = mask.shape
    area = max(int(np.count_nonzero(mask)), 1)
    n = 0
    for i in range(1, count):
        x, y, bw, bh, a = stats[i]
        if x > 0 and y > 0 and x + bw < w and y + bh < h and a >= 0.005 * area:
            n += 1
    return n


def measure(rgb: np.ndarray, mask: np.ndarray, *, prob: np.ndarray | None, parts: int,
            classical: np.ndarray | None, backdrop_score: np.ndarray | None = None,
            frame: np.ndarray | None = None, model_side: int = 320,
            photo_side: int | None = None) -> dict[str, float]:
    """The review signals of a product ``mask`` (bool) on ``rgb`` (both at the guide resolution).

    ``prob`` is the model's map (None for the classical pipeline),
    ``classical`` the backdrop model's own product mask when it is
    trustworthy enough to compare with (None otherwise), ``backdrop_score``
    the border model's distance to the backdrop per pixel, ``frame`` the
    region whose edge counts as the photo's edge (default: all of it),
    ``model_side`` the side of the model's input the map came from, ``photo_side`` the longer side
    of the photo (or region) at full resolution (default: that of ``mask``).
    """
    area = int(np.count_nonzero(mask))
    signals: dict[str, float] = {"parts": float(parts)}
    if area == 0:
        return signals
    signals["tiny"] = area / mask.size
    signals["huge"] = area / mask.size
    signals["frame_contact"] = frame_contact(mask if frame is None else mask & frame)
    x, y, bw, bh = cv2.boundingRect(mask.view(np.uint8))
    signals["fill"] = area / max(bw * bh, 1)
    lab8 = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    lab = lab8.astype(np.float32)
    signals["edge_contrast"] = _edge_contrast(lab, mask)
    signals["holes"] = float(_holes(mask))
    # Both backdrop-inside signals judge the same patches, on the same likeness and grain.
    like_map = border_likeness(rgb)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    spread = _local_spread(grey)
    signals["enclosed_backdrop"] = _enclosed_backdrop(rgb, mask, like_map=like_map, spread=spread)
    signals["filled_gap"] = _filled_gaps(rgb, mask, like_map=like_map, spread=spread, lab=lab8, grey=grey)
    if prob is not None:
        signals["outside_mass"] = _outside_mass(mask, prob, side_scale(mask.shape, model_side, photo_side))
        near = cv2.dilate(mask.view(np.uint8), np.ones((5, 5), np.uint8)) > 0
        mid = (prob > 0.2) & (prob < 0.8) & near
        signals["uncertainty"] = np.count_nonzero(mid) / area
        # Per unit of outline: a thin product (a thermometer) has much outline for its area.
        m = mask.view(np.uint8)
        outline = np.count_nonzero(m & ~cv2.erode(m, np.ones((3, 3), np.uint8)) & 1)
        # The band's width in the coarser of the model's and the photo's pixels: a magnified view (a
        # small product's closer look, a crop of 130-200 px filling the model's 320) shows the model
        # an upsampled blur of the photo's edge, as wide in model px as the magnification, which is
        # no doubt about where the edge lies (tennis balls and coins cut at 0.96-0.99 measured 1.8-2.3
        # model px there, 0.8-1.3 photo px).
        signals["edge_uncertainty"] = np.count_nonzero(mid) / max(
            outline * side_scale(mask.shape, model_side, photo_side), 1.0)
    if backdrop_score is not None:
        small = cv2.resize(m if prob is not None else mask.view(np.uint8),
                           backdrop_score.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        if small.any():
            signals["backdrop_like"] = float(np.count_nonzero(backdrop_score[small] < 1.5)) / np.count_nonzero(small)
    if classical is not None:
        union = np.count_nonzero(mask | classical)
        signals["disagreement"] = 1.0 - np.count_nonzero(mask & classical) / max(union, 1)
    return signals
