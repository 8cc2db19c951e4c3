"""Find the product in a photo and return its matte, or refuse with a reason.

Pipeline (all offline, no model download):

1. Work on a copy downscaled to :data:`WORK_SIDE` px: GrabCut costs 1-1.6 s
   at full resolution and ~0.1 s here.
2. Model the background from the image border: a smooth colour
   surface (plain and gradient sweeps) and a few colour clusters (textured or
   two-tone backgrounds). Every pixel gets a score: its distance to the better
   of the two models, in units of the border's own spread.
3. Seed GrabCut with that score (sure background on the border, probable
   product where the score is high, shadows as probable background) and let
   it settle the uncertain pixels. A plain background with a clean separation
   skips GrabCut: the score alone is already the answer.
4. Keep the product's component(s); refuse (``no_product_found``) when nothing
   stands out from the background or the product runs off the frame.
5. Refine the edge at full resolution: the low-resolution boundary is only
   right to a few working pixels, i.e. up to ~10 px on a 4000 px photo.

The returned matte is float32 in 0..1 (1 = product), at the input's size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from .base import EngineError

logger = logging.getLogger(__name__)

#: Long side of the working copy for background modelling and GrabCut.
#: GrabCut costs ~0.07 s per iteration at 320 px and ~0.2 s at 480 px (2 cores).
WORK_SIDE = 320

#: Score (in border-spread units) above which a pixel seeds the product, and
#: below which a border pixel is sure background.
SEED_SCORE = 3.0
SURE_BG_SCORE = 1.5

#: A product component smaller than this share of the frame is noise.
MIN_PRODUCT_SHARE = 0.004
#: A product covering more than this share of the frame leaves no background to judge.
MAX_PRODUCT_SHARE = 0.92
#: Share of the frame's perimeter the product may touch before we call it cut off.
MAX_FRAME_CONTACT = 0.01
#: Share of the product's pixels whose colours must be rare in the backdrop.
MIN_DISTINCT_SHARE = 0.5

GRABCUT_ITERATIONS = 3
#: Plain backdrops skip GrabCut when in-between pixels are fewer than this share of the seeds.
CLEAN_SPLIT_SHARE = 0.15

_PHOTO_ADVICE = (
    "Upload a photo where the whole product is inside the frame, with some space around it, "
    "on a plain background that contrasts with the product."
)


def no_product(reason: str) -> EngineError:
    return EngineError("no_product_found", f"{reason} {_PHOTO_ADVICE}", transient=False)


@dataclass
class _Work:
    rgb: np.ndarray  # downscaled RGB uint8
    scale: float  # full-res px per work px


#: A strip (4000x120) keeps at least this many working px across its short side.
MIN_WORK_SHORT = 48


def _downscale(rgb: np.ndarray) -> _Work:
    h, w = rgb.shape[:2]
    scale = min(max(h, w) / WORK_SIDE, min(h, w) / MIN_WORK_SHORT)
    if scale <= 1.0:
        return _Work(rgb, 1.0)
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    # INTER_AREA averages sensor noise away, which tightens the border model.
    return _Work(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale)


#: Border strip used to model the background, as a share of the long side.
BORDER_SHARE = 0.025
#: A background colour cluster must cover this share of the border to count as
#: background: a product running off one edge covers less, a second backdrop
#: tone (a dark corner behind a table) more.
MIN_CLUSTER_SHARE = 0.15
#: Smallest spread (Lab units) granted to a background model: a perfectly flat
#: synthetic backdrop would otherwise make every JPEG artefact look like product.
MIN_SPREAD = 3.0


@dataclass
class BackgroundModel:
    score: np.ndarray  # float32: distance to the background, in units of its spread
    shadow: np.ndarray  # bool: darker than the backdrop with the backdrop's colour
    sure_background: np.ndarray  # bool: border pixels that match the backdrop
    border: np.ndarray  # bool: the border strip the model was fitted on
    plain: bool  # a smooth surface explains the border (studio sweep, gradient)
    surface: np.ndarray  # float32 HxWx3: the backdrop's Lab colour at each pixel (the border's smooth fit)


def _border_mask(h: int, w: int, width: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[:width], mask[-width:], mask[:, :width], mask[:, -width:] = True, True, True, True
    return mask


def _design(xs: np.ndarray, ys: np.ndarray, w: int, h: int) -> np.ndarray:
    x, y = xs / max(w - 1, 1) * 2 - 1, ys / max(h - 1, 1) * 2 - 1
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1).astype(np.float32)


def _fit_surface(lab: np.ndarray, border: np.ndarray) -> tuple[np.ndarray, float]:
    """Quadratic colour surface through the border (robust to clutter), and its spread."""
    h, w = border.shape
    ys, xs = np.nonzero(border)
    design, pix = _design(xs, ys, w, h), lab[border]
    keep = np.ones(len(pix), bool)
    for _ in range(3):
        # Normal equations: a 6x6 solve, ~100x cheaper than lstsq's SVD here.
        a = design[keep].astype(np.float64)
        coef = np.linalg.solve(a.T @ a + 1e-6 * np.eye(6), a.T @ pix[keep].astype(np.float64))
        res = np.linalg.norm(pix - design @ coef, axis=1)
        # ~90th percentile of the backdrop's residuals, estimated from the
        # median so that a product crossing the border cannot inflate it.
        spread = max(MIN_SPREAD, 1.63 * float(np.median(res[keep])))
        keep = res <= 2.5 * spread
    # Evaluate the quadratic by broadcasting a row and a column instead of
    # building an (h*w, 6) design matrix.
    x = (np.arange(w, dtype=np.float32) / max(w - 1, 1) * 2 - 1)[None, :, None]
    y = (np.arange(h, dtype=np.float32) / max(h - 1, 1) * 2 - 1)[:, None, None]
    c = coef.astype(np.float32)
    surface = c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * y * y + c[5] * x * y
    return surface, spread


def _cluster_score(lab: np.ndarray, border: np.ndarray) -> np.ndarray:
    """Distance to the nearest sizeable border colour cluster, in units of its spread."""
    pix = lab[border]
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    # Fixed seed: the same photo must always give the same cut-out.
    cv2.setRNGSeed(7)
    _, labels, centres = cv2.kmeans(pix, 4, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    flat = lab.reshape(-1, 3)
    best = np.full(flat.shape[0], np.inf, np.float32)
    for k, centre in enumerate(centres):
        members = pix[labels == k]
        if len(members) < MIN_CLUSTER_SHARE * len(pix):
            continue
        spread = max(MIN_SPREAD, float(np.percentile(np.linalg.norm(members - centre, axis=1), 90)))
        dist = np.linalg.norm(flat - centre, axis=1) / spread
        np.minimum(best, dist, out=best)
    return best.reshape(lab.shape[:2])


def model_background(rgb: np.ndarray) -> BackgroundModel:
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    # The strip is thin enough to leave the middle of a thin photo (a 4000x120 strip) unmodelled.
    width = max(1, min(max(3, round(BORDER_SHARE * max(h, w))), min(h, w) // 6))
    border = _border_mask(h, w, width)
    surface, spread = _fit_surface(lab, border)
    diff = lab - surface
    surface_score = np.linalg.norm(diff, axis=2) / spread
    cluster_score = _cluster_score(lab, border)
    score = np.minimum(surface_score, cluster_score).astype(np.float32)

    # Cast shadows: darker than the backdrop at that spot (but not black), with
    # the backdrop's hue; darkening a coloured backdrop shrinks its chroma in
    # proportion, so the tolerance grows with the backdrop's own chroma.
    darker = -diff[..., 0]
    backdrop_l = np.maximum(surface[..., 0], 1.0)
    backdrop_chroma = np.hypot(surface[..., 1] - 128, surface[..., 2] - 128)
    chroma_shift = np.hypot(diff[..., 1], diff[..., 2])
    shadow = (darker > 2 * spread) & (darker < 0.6 * backdrop_l)
    shadow &= chroma_shift < 2 * spread + 1.2 * backdrop_chroma * darker / backdrop_l
    return BackgroundModel(
        score=score,
        shadow=shadow,
        sure_background=border & (score < SURE_BG_SCORE),
        border=border,
        plain=spread <= 2 * MIN_SPREAD,
        surface=np.broadcast_to(surface, lab.shape),
    )


#: Border strip for :func:`border_likeness`, as a share of the long side: wider than the
#: surface fit's, because it samples a busy backdrop's colours rather than fitting a smooth one.
LIKENESS_BORDER_SHARE = 0.04


def border_likeness(rgb: np.ndarray) -> np.ndarray:
    """Per pixel, how much its colour looks like the frame's border (float32 0..1).

    The border strip is taken as a sample of the backdrop (a product stands inside
    the frame). For each colour (Lab, 16 levels per channel) the value is the
    colour's frequency in the border over its frequency in the whole photo, capped
    at 1: a backdrop colour is about 1 wherever it appears, a colour the border
    never shows is 0. It judges busy backdrops too (gears, gravel, bark), where
    the smooth surface fit of :func:`model_background` cannot.
    """
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (0, 0), 1.0), cv2.COLOR_RGB2LAB)
    width = max(1, min(max(3, round(LIKENESS_BORDER_SHARE * max(h, w))), min(h, w) // 6))
    border = _border_mask(h, w, width)
    q = lab >> 4
    bins = (q[..., 0].astype(np.int32) * 16 + q[..., 1]) * 16 + q[..., 2]
    in_border = np.bincount(bins[border], minlength=4096).astype(np.float32)
    in_photo = np.bincount(bins.ravel(), minlength=4096).astype(np.float32)
    ratio = (in_border / max(in_border.sum(), 1.0)) / np.maximum(in_photo / max(in_photo.sum(), 1.0), 1e-9)
    like = np.minimum(ratio, 1.0).astype(np.float32)[bins]
    # A colour is judged with its neighbourhood: single pixels of a texture do not decide.
    return cv2.GaussianBlur(like, (0, 0), 2.0)


def _matte_from_alpha(alpha: np.ndarray) -> np.ndarray:
    """The seller's own cut-out. No frame-contact rule: cut-outs are usually trimmed tight."""
    matte = alpha.astype(np.float32) / 255.0
    if np.count_nonzero(alpha >= 128) < MIN_PRODUCT_SHARE * alpha.size:
        raise no_product("The image is almost entirely transparent.")
    return matte


def _grabcut(work: np.ndarray, model: BackgroundModel, seeds: np.ndarray | None) -> np.ndarray:
    """GrabCut seeded by the border model, or (``seeds`` None) by the frame alone.

    Frame-only seeding is the classic "product somewhere inside" start, used
    when the backdrop is too busy for its colours to single anything out.
    """
    if seeds is None:
        mask = np.full(model.score.shape, cv2.GC_PR_FGD, np.uint8)
        mask[model.border] = cv2.GC_BGD
    else:
        mask = np.full(seeds.shape, cv2.GC_PR_BGD, np.uint8)
        mask[seeds] = cv2.GC_PR_FGD
        mask[model.sure_background] = cv2.GC_BGD
    fg_seeds = np.count_nonzero((mask == cv2.GC_PR_FGD) | (mask == cv2.GC_FGD))
    bg_seeds = np.count_nonzero((mask == cv2.GC_BGD) | (mask == cv2.GC_PR_BGD))
    if fg_seeds < 16 or bg_seeds < 16:
        # GrabCut needs samples of both to fit its colour models (it asserts otherwise).
        return (mask == cv2.GC_PR_FGD) | (mask == cv2.GC_FGD)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut's GMM initialisation draws from OpenCV's RNG: pin it so the same
    # photo always gives the same cut-out.
    cv2.setRNGSeed(11)
    cv2.grabCut(work, mask, None, bgd, fgd, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def _distinct_share(work: np.ndarray, product: np.ndarray) -> float:
    """Share of product pixels whose colour is at least twice as common in the product as around it.

    GrabCut always returns *something*; on a hopeless photo (product and
    backdrop the same colours) that something has the backdrop's colours.
    """
    q = (work >> 4).astype(np.int32)  # 16 levels per channel
    bins = (q[..., 0] * 16 + q[..., 1]) * 16 + q[..., 2]
    inside = np.bincount(bins[product], minlength=4096) / max(np.count_nonzero(product), 1)
    outside = np.bincount(bins[~product], minlength=4096) / max(np.count_nonzero(~product), 1)
    distinct = inside > 2 * outside
    return float(inside[distinct].sum())


def _frame_contact(component: np.ndarray) -> float:
    """Share of the frame's outermost pixels the component covers."""
    edge = np.concatenate([component[0], component[-1], component[1:-1, 0], component[1:-1, -1]])
    return float(np.count_nonzero(edge)) / edge.size


def _pick_product(fg: np.ndarray, work: np.ndarray) -> np.ndarray:
    """The product's component(s), or raise ``no_product_found``."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    min_area = MIN_PRODUCT_SHARE * fg.size
    parts = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    if not parts:
        raise no_product("No product stands out from the background.")
    contact = {i: _frame_contact(labels == i) for i in parts}
    inside = [i for i in parts if contact[i] <= MAX_FRAME_CONTACT]
    largest = max(parts, key=lambda i: stats[i, cv2.CC_STAT_AREA])
    # Background clutter that runs off the frame (a table edge, a dark corner)
    # may be bigger than the product; prefer a part that is wholly inside the
    # frame unless it is small next to the part that is cut off.
    main = largest
    if contact[largest] > MAX_FRAME_CONTACT and inside:
        best_inside = max(inside, key=lambda i: stats[i, cv2.CC_STAT_AREA])
        if stats[best_inside, cv2.CC_STAT_AREA] >= 0.3 * stats[largest, cv2.CC_STAT_AREA]:
            main = best_inside
    if contact[main] > MAX_FRAME_CONTACT:
        raise no_product("The product seems to be cut off by the edge of the photo.")
    main_area = stats[main, cv2.CC_STAT_AREA]
    # Multi-part products (a pair of earrings): keep sizeable parts inside the frame.
    keep = [main] + [i for i in inside if i != main and stats[i, cv2.CC_STAT_AREA] >= 0.1 * main_area]
    product = np.isin(labels, keep)
    if np.count_nonzero(product) > MAX_PRODUCT_SHARE * fg.size:
        raise no_product("The product fills the whole photo, leaving no background to remove.")
    distinct = _distinct_share(work, product)
    logger.debug("Product: %.1f %% of frame, %.0f %% distinct from backdrop",
                 100 * np.count_nonzero(product) / fg.size, 100 * distinct)
    if distinct < MIN_DISTINCT_SHARE:
        raise no_product("The product barely differs from its background.")
    return product


def _fill_small_holes(mask: np.ndarray, max_share: float = 0.002) -> np.ndarray:
    """Fill enclosed specks (a highlight matching the background) but keep real holes (a mug handle)."""
    inverse = (~mask).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inverse, connectivity=4)
    small = [
        i for i in range(1, count)
        if stats[i, cv2.CC_STAT_AREA] < max_share * mask.size
        and stats[i, cv2.CC_STAT_LEFT] > 0 and stats[i, cv2.CC_STAT_TOP] > 0
        and stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] < mask.shape[1]
        and stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] < mask.shape[0]
    ]
    return mask | np.isin(labels, small) if small else mask


def coarse_mask(rgb: np.ndarray) -> tuple[np.ndarray, _Work, BackgroundModel]:
    """Product mask at working resolution (bool), the working copy and its background model."""
    work = _downscale(rgb)
    model = model_background(work.rgb)
    seeds = model.score >= SEED_SCORE
    # A grey product on a white sweep looks like a shadow too: only treat
    # shadow-like pixels as backdrop when most of the candidate product is left.
    drop_shadow = np.count_nonzero(seeds & ~model.shadow) >= 0.5 * np.count_nonzero(seeds)
    shadow = model.shadow if drop_shadow else np.zeros_like(model.shadow)
    seeds &= ~shadow
    few_seeds = np.count_nonzero(seeds) < MIN_PRODUCT_SHARE * seeds.size * 0.25
    uncertain = np.count_nonzero((model.score >= SURE_BG_SCORE) & (model.score < SEED_SCORE))
    if few_seeds and model.plain:
        raise no_product("No product stands out from the background.")
    if few_seeds:
        # A busy backdrop (wood, a room) spans so many colours that nothing
        # stands out from them by colour alone.
        fg = _grabcut(work.rgb, model, None) & ~shadow
        method = "grabcut (frame seeded)"
    elif model.plain and uncertain < CLEAN_SPLIT_SHARE * np.count_nonzero(seeds):
        # A plain backdrop and few in-between pixels: the score already is the
        # cut-out, and GrabCut would only cost time.
        fg = (model.score >= (SURE_BG_SCORE + SEED_SCORE) / 2) & ~shadow
        method = "border model"
    else:
        # GrabCut happily keeps a soft shadow glued to the product.
        fg = _grabcut(work.rgb, model, seeds) & ~shadow
        method = "grabcut"
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    if method != "border model":
        # GrabCut's boundary on a busy backdrop is ragged pixel by pixel;
        # product outlines are smooth at this scale.
        fg = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 1.0) >= 0.5
    product = _fill_small_holes(_pick_product(fg, work.rgb))
    logger.debug("Segmented with %s at %dx%d", method, work.rgb.shape[1], work.rgb.shape[0])
    return product, work, model


def segment_product(rgb: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Matte of the product in ``rgb`` (HxWx3 uint8): float32 HxW, 0.0 background .. 1.0 product.

    With ``alpha`` (HxW uint8, the input's own transparency) the seller's
    cut-out is used as is. Raises ``EngineError("no_product_found",
    transient=False)`` with advice for the seller when the product cannot be
    separated with confidence: no contrast with the background, the product
    cut by the frame, or the product filling the whole photo.
    """
    if alpha is not None:
        return _matte_from_alpha(alpha)
    product, work, _ = coarse_mask(rgb)
    return refine_matte(rgb, product, work)


#: Local product/backdrop colours are averaged over this radius (working px).
COLOUR_RADIUS = 6
#: Below this colour distance (RGB units) between product and backdrop the
#: edge cannot be unmixed; the upsampled coarse edge is kept there.
MIN_UNMIX_CONTRAST = 30.0


def _local_mean(work: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted local mean colour and the local weight (0 where no sample is near)."""
    size = (2 * COLOUR_RADIUS + 1,) * 2
    w = cv2.boxFilter(weight, cv2.CV_32F, size, normalize=False)
    acc = cv2.boxFilter(work.astype(np.float32) * weight[..., None], cv2.CV_32F, size, normalize=False)
    return acc / np.maximum(w, 1e-6)[..., None], w


def _bilinear(img: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """``img`` (2-D float) sampled at fractional (row, col) positions."""
    h, w = img.shape
    fy, fx = np.clip(fy, 0, h - 1), np.clip(fx, 0, w - 1)
    y0, x0 = np.minimum(fy.astype(np.intp), h - 2 if h > 1 else 0), np.minimum(fx.astype(np.intp), w - 2 if w > 1 else 0)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    dy, dx = fy - y0, fx - x0
    top = img[y0, x0] * (1 - dx) + img[y0, x1] * dx
    bottom = img[y1, x0] * (1 - dx) + img[y1, x1] * dx
    return top * (1 - dy) + bottom * dy


def refine_matte(rgb: np.ndarray, product: np.ndarray, work: _Work) -> np.ndarray:
    """Full-resolution matte from the working-resolution mask.

    Inside a band of +-2 working px around the coarse edge each pixel is
    unmixed against the local product and backdrop colours (alpha = projection
    of its colour on the backdrop->product line), which both moves the edge to
    the right pixel and gives antialiased edges a fractional alpha. Outside
    the band the matte is exactly 0 or 1, so the backdrop becomes exactly
    white later. Full-resolution work is confined to the product's box.
    """
    h, w = rgb.shape[:2]
    mask = product.astype(np.uint8)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    inner_s, outer_s = cv2.erode(mask, disc), cv2.dilate(mask, disc)
    bx, by, bw, bh = cv2.boundingRect(outer_s)
    s = work.scale
    x0, y0 = max(0, int(bx * s) - 1), max(0, int(by * s) - 1)
    x1, y1 = min(w, int(np.ceil((bx + bw) * s)) + 1), min(h, int(np.ceil((by + bh) * s)) + 1)
    # Work pixel under each full-resolution row/column of the box.
    wy = np.minimum((np.arange(y0, y1) / s).astype(np.intp), mask.shape[0] - 1)
    wx = np.minimum((np.arange(x0, x1) / s).astype(np.intp), mask.shape[1] - 1)
    inner = inner_s[wy[:, None], wx[None, :]]
    band = (outer_s[wy[:, None], wx[None, :]] > 0) & (inner == 0)
    crop = inner.astype(np.float32)

    # Colour samples one working pixel away from the coarse edge are pure.
    cross = np.ones((3, 3), np.uint8)
    fg_mean, fg_w = _local_mean(work.rgb, cv2.erode(mask, cross).astype(np.float32))
    backdrop = (cv2.dilate(mask, cross) == 0).astype(np.float32)
    bg_mean, bg_w = _local_mean(work.rgb, backdrop)
    # The backdrop's own local variation (wood grain): unmixing against a
    # mean colour is only meaningful when the product stands well clear of it.
    bg_sq, _ = _local_mean(work.rgb.astype(np.float32) ** 2, backdrop)
    bg_var = np.maximum(bg_sq - bg_mean**2, 0.0).sum(axis=2)

    ys, xs = np.nonzero(band)
    sy, sx = wy[ys], wx[xs]
    fg, bg = fg_mean[sy, sx], bg_mean[sy, sx]
    pix = rgb[ys + y0, xs + x0].astype(np.float32)
    line = fg - bg
    length2 = np.einsum("ij,ij->i", line, line)
    alpha = np.einsum("ij,ij->i", pix - bg, line) / np.maximum(length2, 1e-6)
    usable = (length2 >= np.maximum(MIN_UNMIX_CONTRAST**2, 9.0 * bg_var[sy, sx]))
    usable &= (fg_w[sy, sx] > 0.5) & (bg_w[sy, sx] > 0.5)
    if not usable.all():
        # Product and backdrop too alike to unmix: a smooth (bilinear) coarse edge.
        coarse = _bilinear(mask.astype(np.float32), (ys + y0 + 0.5) / s - 0.5, (xs + x0 + 0.5) / s - 0.5)
        alpha = np.where(usable, alpha, coarse)
    # Snap near-certain pixels: sensor noise must not leave a faint veil of
    # 3 %-opaque backdrop around the product (it would be off-white later).
    crop[ys, xs] = np.clip((alpha - 0.08) / 0.84, 0.0, 1.0)
    matte = np.zeros((h, w), np.float32)
    matte[y0:y1, x0:x1] = _drop_specks(crop, inner, band)
    return matte


def _drop_specks(matte: np.ndarray, inner: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Zero the band's stray bits: backdrop texture that unmixed as faint or solid product.

    Solid bits must connect to the product's core; faint coverage is kept
    only right next to solid product (the antialiased rim). Only the band can
    hold strays (outside it the matte is exactly 0 or 1), so only the band's
    pixels are labelled.
    """
    solid = ((matte >= 0.5) & band).view(np.uint8)
    count, labels = cv2.connectedComponents(solid, connectivity=8)
    # A band component touching the core (the core's 1 px outer ring) belongs to it.
    ring = (cv2.dilate(inner, np.ones((3, 3), np.uint8)) > 0) & band
    in_core = np.bincount(labels[ring], minlength=count) > 0
    in_core[0] = False
    solid_product = in_core[labels].view(np.uint8) | inner
    rim = cv2.dilate(solid_product, np.ones((5, 5), np.uint8)) > 0
    matte[~rim] = 0.0
    return matte
