"""Full-resolution edges from a low-resolution soft mask.

The salient-object model sees the photo at 320x320, so its mask is right to
about one model pixel: 6 px on a 2000 px photo, 12 px on a 4000 px one.
Upsampled as is it gives blurred or stair-stepped edges. Here the mask is
refined with a colour guided filter (He, Sun & Tang, "Guided Image
Filtering", 2013) with the photo as the guide, in its fast form: the filter's
linear coefficients are solved on a copy of at most :data:`GUIDE_SIDE` px
and applied to the full-resolution pixels, only in a narrow band along the
edge. Outside the band the matte is exactly 0 or 1, and the band's faint
coverage is snapped to 0, so no veil of nearly-white pixels is left around
the product.

When the model saw the region magnified (a small product's closer look: a
150 px crop fills the model's 320 px), its map is an upsampled blur whose
0.5 line lies at the outer end of the photo's own soft edge, about one
photo pixel too wide all round (engine 2.2 measured +0.6 to +0.8 px on a
coin, a tennis ball and a key: 3-5 % of their area). There the photo's own
colours decide the band (:func:`colour_coverage`): each band pixel's
position between the local product colour and the local backdrop colour,
where the two are well apart.
"""
from __future__ import annotations

import cv2
import numpy as np

#: Long side of the copy the guided filter's coefficients are solved on.
GUIDE_SIDE = 640
#: Guided-filter radius and half-width of the edge band, in model pixels
#: (the model's mask is right to about one of its pixels).
BAND_MODEL_PX = 1.5
#: Regulariser (guide in 0..1 units): below a local colour spread of about
#: sqrt(EPS) the filter trusts the model's mask rather than the photo.
EPS = 2e-3
#: Coverage at or below LOW becomes 0, at or above HIGH becomes 1 (linear between).
LOW, HIGH = 0.12, 0.88
#: The band's colours decide the edge only where the model saw the region at least at the photo's
#: own resolution (guide pixels per model pixel at most this): a downscaled view's map is sharper
#: than the photo's pixels and the guided filter refines it; a magnified view's map is not.
COLOUR_MAX_PX_PER_MODEL_PX = 1.0
#: Separation of the local product and backdrop colours (squared distance over the sum of their
#: variances) from which the colours are trusted at all (SEP_LOW) and fully (SEP_HIGH).
SEP_LOW, SEP_HIGH = 2.0, 6.0
#: Least share of product (and of backdrop) pixels around a band pixel for its colour to be known.
MIN_SIDE_SHARE = 0.15


def _box(img: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(img, cv2.CV_32F, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_coefficients(guide: np.ndarray, p: np.ndarray, r: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Box-averaged coefficients ``(a, b)`` (HxWx3, HxW) with ``q = a . I + b`` (colour guide)."""
    mean_i = _box(guide, r)
    mean_p = _box(p, r)
    cov_ip = _box(guide * p[..., None], r) - mean_i * mean_p[..., None]
    # The six distinct entries of each pixel's symmetric 3x3 covariance, each its own contiguous
    # plane: an interleaved HxWx3x3 array cost a strided write per entry and strided reads in the
    # solve (a third of this function's time on a 2000 px photo). Same operations, same order.
    ch = [np.ascontiguousarray(guide[..., i]) for i in range(3)]
    mi = [np.ascontiguousarray(mean_i[..., i]) for i in range(3)]
    sigma = {}
    for i in range(3):
        for j in range(i, 3):
            v = _box(ch[i] * ch[j], r) - mi[i] * mi[j]
            sigma[i, j] = v + np.float32(eps) if i == j else v
    a = _solve3(sigma, [np.ascontiguousarray(cov_ip[..., c]) for c in range(3)])
    b = mean_p - np.einsum("...c,...c->...", a, mean_i)
    return _box(a, r), _box(b, r)


def _solve3(m: dict[tuple[int, int], np.ndarray], v: list[np.ndarray]) -> np.ndarray:
    """Per-pixel solution (HxWx3) of a symmetric 3x3 system by its adjugate (several times faster than
    linalg.solve); ``m`` holds the upper triangle's planes by (row, column), ``v`` the right side's."""
    a, b, c = m[0, 0], m[0, 1], m[0, 2]
    d, e, f = m[1, 1], m[1, 2], m[2, 2]
    i00, i01, i02 = d * f - e * e, c * e - b * f, b * e - c * d
    i11, i12, i22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * i00 + b * i01 + c * i02
    x, y, z = v
    return cv2.merge([(i00 * x + i01 * y + i02 * z) / det, (i01 * x + i11 * y + i12 * z) / det,
                      (i02 * x + i12 * y + i22 * z) / det])


def _sample(img: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` (HxW or HxWxC float32) at fractional (row, col) positions (clamped
    to the image), one row per position.

    ``cv2.remap`` on a 1xN map does the gather and the weights in one C pass: about 5x faster than
    NumPy's fancy indexing over the hundreds of thousands of band pixels of a 4000 px photo (its
    weights are quantised to 1/32 px, far below the model's 12 px resolution there).
    """
    n = fy.size
    if n == 0:
        return np.empty((0,) + img.shape[2:], np.float32)
    # remap's maps are at most 32767 wide: the positions go in rows of _ROW, the last one padded.
    rows = -(-n // _ROW)
    map_x = np.zeros(rows * _ROW, np.float32)
    map_y = np.zeros(rows * _ROW, np.float32)
    map_x[:n], map_y[:n] = fx, fy
    got = cv2.remap(img, map_x.reshape(rows, _ROW), map_y.reshape(rows, _ROW), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return got.reshape((rows * _ROW,) + img.shape[2:])[:n]


_ROW = 4096


def guide_size(h: int, w: int) -> tuple[int, int]:
    """(width, height) of the copy the coefficients are solved on."""
    s = min(1.0, GUIDE_SIDE / max(h, w))
    return max(1, round(w * s)), max(1, round(h * s))


def refine(rgb: np.ndarray, prob: np.ndarray, solid: np.ndarray, model_side: int,
           small: np.ndarray | None = None) -> np.ndarray:
    """Full-resolution matte of ``rgb`` (HxWx3 uint8).

    ``prob`` (float32 0..1) and ``solid`` (bool: the product as decided
    from it) are at :func:`guide_size` of ``rgb``; ``model_side`` is the
    side of the map the probabilities came from (it sets the band's width);
    ``small`` is ``rgb`` at that size when the caller has it already.
    """
    h, w = rgb.shape[:2]
    gh, gw = prob.shape
    per_model_px = max(gh, gw) / max(model_side, 1)
    r = max(1, round(BAND_MODEL_PX * per_model_px))
    # The filter only moves the edge the model drew; far from it the product
    # decision stands, so the filter's input is the model's map masked by it.
    mask = solid.astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    near = cv2.dilate(mask, k)
    inner = cv2.erode(mask, k)
    band = (near > 0) & (inner == 0)

    # Only the product's box (plus the band) is touched at full resolution.
    bx, by, bw, bh = cv2.boundingRect(near)
    matte = np.zeros((h, w), np.float32)
    if bw == 0:
        return matte
    # The coefficients at a band pixel depend on the guide within 2r of it
    # (two box filters), so they are solved on the band's box plus that
    # margin (and one pixel for the bilinear samples): the same numbers as on
    # the whole copy, for a fraction of the work.
    m = 2 * r + 2
    cx0, cy0 = max(0, bx - m), max(0, by - m)
    cx1, cy1 = min(gw, bx + bw + m), min(gh, by + bh + m)
    if small is None:
        small = rgb if (gh, gw) == (h, w) else cv2.resize(rgb, (gw, gh), interpolation=cv2.INTER_AREA)
    guide = small[cy0:cy1, cx0:cx1].astype(np.float32) / 255.0
    p = np.where(near[cy0:cy1, cx0:cx1] > 0, prob[cy0:cy1, cx0:cx1], 0.0).astype(np.float32)
    a, b = guided_coefficients(guide, p, r, EPS)
    sy, sx = h / gh, w / gw
    x0, y0 = max(0, int(bx * sx) - 1), max(0, int(by * sy) - 1)
    x1, y1 = min(w, int(np.ceil((bx + bw) * sx)) + 1), min(h, int(np.ceil((by + bh) * sy)) + 1)
    gy = np.minimum((np.arange(y0, y1) / sy).astype(np.intp), gh - 1)
    gx = np.minimum((np.arange(x0, x1) / sx).astype(np.intp), gw - 1)
    # Nearest-neighbour upsampling as two gathers (rows, then columns): far
    # cheaper than one 2-D fancy index over millions of pixels.
    crop = inner.take(gy, axis=0).take(gx, axis=1).astype(np.float32)
    ys, xs = np.nonzero(band.take(gy, axis=0).take(gx, axis=1))
    fy, fx = (ys + y0 + 0.5) / sy - 0.5 - cy0, (xs + x0 + 0.5) / sx - 0.5 - cx0
    pix = rgb[ys + y0, xs + x0].astype(np.float32) / 255.0
    q = np.einsum("ij,ij->i", _sample(a, fy, fx), pix) + _sample(b, fy, fx)
    if per_model_px <= COLOUR_MAX_PX_PER_MODEL_PX:
        alpha, trust = colour_coverage(guide, mask[cy0:cy1, cx0:cx1], r, pix, fy, fx)
        q = trust * alpha + (1.0 - trust) * q
    crop[ys, xs] = np.clip((q - LOW) / (HIGH - LOW), 0.0, 1.0)
    matte[y0:y1, x0:x1] = _drop_strays(crop)
    return matte


def colour_coverage(guide: np.ndarray, solid: np.ndarray, r: int, pix: np.ndarray, fy: np.ndarray,
                    fx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of band pixels from the local colours, and how far to trust it (both 0..1 per pixel).

    ``guide`` (HxWx3 float 0..1) and ``solid`` (uint8, the product as decided) are the guide copy's
    crop; the band is ``solid`` +-``r`` px. The local product colour F is the mean of the product's
    pixels just inside the band (within r + 1 px of it), the backdrop colour B that of the pixels
    just outside; a band pixel I covers ``(I - B) . (F - B) / |F - B|^2`` of itself, the compositing
    equation solved along the line from B to F (so noise across that line does not count). The
    nearest pixels rather than a wider mean: a product's rim is often lighter or darker than its
    middle. Trusted where F and B are far apart for their own spread (texture) and both sides are
    present around the pixel (a thin part has no inside beyond the band).
    """
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    sides = []
    for side in (cv2.erode(solid, k), (cv2.dilate(solid, k) == 0).view(np.uint8)):
        m = side.astype(np.float32)
        share = _box(m, r + 1)
        inv = 1.0 / np.maximum(share, 1e-6)
        mean = _box(guide * m[..., None], r + 1) * inv[..., None]
        var = np.maximum(_box(np.einsum("ijc,ijc->ij", guide, guide) * m, r + 1) * inv
                         - np.einsum("ijc,ijc->ij", mean, mean), 0.0)
        sides.append(_sample(np.dstack([mean, var, share]), fy, fx))
    (fg, bg) = sides
    d = fg[:, :3] - bg[:, :3]
    dd = np.einsum("ij,ij->i", d, d)
    alpha = np.clip(np.einsum("ij,ij->i", pix - bg[:, :3], d) / np.maximum(dd, 1e-6), 0.0, 1.0)
    separation = dd / (fg[:, 3] + bg[:, 3] + 1e-4)
    trust = np.clip((separation - SEP_LOW) / (SEP_HIGH - SEP_LOW), 0.0, 1.0)
    trust *= np.clip(fg[:, 4] / MIN_SIDE_SHARE, 0.0, 1.0) * np.clip(bg[:, 4] / MIN_SIDE_SHARE, 0.0, 1.0)
    return alpha, trust


def _drop_strays(matte: np.ndarray) -> np.ndarray:
    """Zero coverage not attached to the product's solid part (backdrop texture the filter picked up)."""
    solid = (matte >= 0.5).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if count <= 2:
        keep = solid
    else:
        # Tiny solid crumbs in the band are texture; real parts were decided upstream and are large.
        biggest = stats[1:, cv2.CC_STAT_AREA].max()
        big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= max(4, 0.002 * biggest))
        big = big[big > 0]
        lookup = np.zeros(count, np.uint8)
        lookup[big] = 1
        keep = lookup[labels]
    near = cv2.dilate(keep, np.ones((5, 5), np.uint8))
    # Kept: near a kept part, and not a dropped crumb (solid but not kept). One
    # multiply by the 0/1 mask instead of two boolean-indexed writes.
    allowed = near if keep is solid else near > cv2.subtract(solid, keep)
    np.multiply(matte, allowed, out=matte)
    return matte
