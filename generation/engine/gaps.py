"""The backdrop seen through a product's gaps, cut out as holes.

A salient-object model fills the gaps of an open product with the backdrop behind them and is
sure of it: a trumpet's loops of tube come back full of the wood they lie on. The review signal
``enclosed_backdrop`` (:func:`generation.engine.review.enclosed_backdrop_patches`) finds those
patches: the backdrop's colours and texture, enclosed by the product's other colours. Those
patches are coarse (16 colour levels, so a brass tube the colour of the wood joins them), and a
see-through glass is enclosed backdrop by nature, so a patch is not punched as it is. Inside it,
a pixel is a hole when

* its neighbourhood's colours are likelier in the backdrop right around the product than in the
  product's own (the rest of the cut), so a wood-coloured tube stays product;
* its hole is walled: it does not reach the product's outline (:data:`WALL_PX`). A glass's rim is
  faint, and the backdrop seen through it runs up to its outline; a gap between tubes is closed
  by them;
* its hole is walled by the product's own colours (:data:`~generation.engine.review.ENCLOSED_RING`
  of the pixels around it, as for the patch): inside a glass, a spot of table a little likelier
  than the rest is surrounded by more of the same;
* its hole's mean colour is within one standard deviation of the backdrop around the product
  (:data:`MAX_COLOUR_SIGMAS`): the backdrop itself, not a product part of the backdrop's hues
  (a guitar's wood against bark: 0.8-2 sigmas away).
"""
from __future__ import annotations

import cv2
import numpy as np

from .review import ENCLOSED_MIN_SHARE, ENCLOSED_RING, enclosed_backdrop_patches

#: Only a cut whose enclosed backdrop is at least this share of it is looked at: the start of the
#: ``enclosed_backdrop`` review ramp (good cuts other than a glass measured <= 0.11).
MIN_ENCLOSED = 0.10
#: The backdrop's colours are sampled in a ring this share of the photo's long side around the product.
RING_SHARE = 0.02
#: Colour likelihoods are judged over a neighbourhood (Gaussian sigma, guide px), not per pixel.
NEIGHBOURHOOD = 2.0
#: A hole is at least this share of the product (smaller ones are left: not worth the risk).
MIN_HOLE_SHARE = ENCLOSED_MIN_SHARE / 2
#: A hole keeps at least this distance (guide px) from the outside of the cut.
WALL_PX = 2.0
MAX_COLOUR_SIGMAS = 1.0


def find_gaps(rgb: np.ndarray, product: np.ndarray) -> tuple[np.ndarray, float]:
    """The pixels of ``product`` (bool, on ``rgb`` at the guide resolution) that are backdrop seen
    through its gaps (bool; maybe none), and the ``enclosed_backdrop`` signal of ``product``."""
    none = np.zeros_like(product)
    area = int(np.count_nonzero(product))
    if area == 0:
        return none, 0.0
    patches = enclosed_backdrop_patches(rgb, product)
    share = np.count_nonzero(patches) / area
    if share < MIN_ENCLOSED:
        return none, share
    h, w = product.shape
    r = max(3, round(RING_SHARE * max(h, w)))
    pm = product.view(np.uint8)
    ring = (cv2.dilate(pm, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0) & ~product
    own = product & ~patches
    if not ring.any() or not own.any():
        return none, share
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (0, 0), 1.0), cv2.COLOR_RGB2LAB)
    q = (lab >> 4).astype(np.int32)
    bins = (q[..., 0] * 16 + q[..., 1]) * 16 + q[..., 2]
    # Colour histograms (16 levels per Lab channel, add-half smoothing) of the backdrop around the
    # product and of the product's own colours; their log ratio per pixel, over a neighbourhood.
    backdrop = np.bincount(bins[ring], minlength=4096) + 0.5
    product_h = np.bincount(bins[own], minlength=4096) + 0.5
    ratio = np.log((backdrop / backdrop.sum()) / (product_h / product_h.sum())).astype(np.float32)
    score = cv2.GaussianBlur(ratio[bins], (0, 0), NEIGHBOURHOOD)
    holes = cv2.morphologyEx((patches & (score > 0)).view(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=8)
    if count <= 1:
        return none, share
    inside = cv2.distanceTransform(pm, cv2.DIST_L2, 3)
    labf = lab.astype(np.float32)
    ring_mean = labf[ring].mean(axis=0)
    ring_sigma = float(np.linalg.norm(labf[ring].std(axis=0)))
    keep = []
    for i in range(1, count):
        if stats[i, cv2.CC_STAT_AREA] < MIN_HOLE_SHARE * area:
            continue
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        hole = labels[y:y + bh, x:x + bw] == i
        if float(inside[y:y + bh, x:x + bw][hole].min()) < WALL_PX:
            continue
        colour = labf[y:y + bh, x:x + bw][hole].mean(axis=0)
        if float(np.linalg.norm(colour - ring_mean)) > MAX_COLOUR_SIGMAS * ring_sigma:
            continue
        # Its wall: the pixels within 2 px around it, at least ENCLOSED_RING of them the product's
        # own colours (not backdrop-coloured, like the patch it came from).
        x0, y0, x1, y1 = max(0, x - 2), max(0, y - 2), min(w, x + bw + 2), min(h, y + bh + 2)
        hole = labels[y0:y1, x0:x1] == i
        wall = (cv2.dilate(hole.view(np.uint8), np.ones((5, 5), np.uint8)) > 0) & ~hole
        if float(own[y0:y1, x0:x1][wall].mean()) >= ENCLOSED_RING:
            keep.append(i)
    if not keep:
        return none, share
    return np.isin(labels, keep), share
