"""Where to look when the salient-object model saw (almost) nothing in a photo.

A faint model answer (its raw range under ``cut.MIN_MODEL_RANGE``) is the one case in which the
engine may refuse a photo, so it is where a small product the model misses must still be found. The
model's own faint spot is looked at first (``cut._faint_box``). When that spot is the backdrop
(a key 0.07 % of a burlap photo: the model's map is highest on a knot of the weave), the colours
say where a product is: :func:`lone_distinct_box` finds a single compact blob of colours the frame's
border lacks that stands out from its surroundings. A photo of nothing (a flat wall, fabric, paper,
grass, wood) has no such blob: every colour of a texture is in its border, and the few that are not
come as scattered specks or as the broad, diffuse middle of an unevenly lit backdrop.
"""
from __future__ import annotations

import cv2
import numpy as np

from .segment import border_likeness

#: Long side of the copy the colours are judged on: a product that the model misses because it is
#: tiny is a few pixels across on the 320 px working copy, where the likeness's own blur erases it
#: (the key above: no pixel under the likeness line at 320 px, a blob of 60 px at 640 px).
LIKENESS_SIDE = 640
#: A pixel's colour is one the border lacks under this likeness (as ``cut.DISTINCT_LIKENESS``).
DISTINCT_LIKENESS = 0.15
#: The blob must be at least this share of the copy (smaller is a speck of noise or texture) and at
#: most this share (a larger product is one the model sees; a larger blob is the lit middle of a
#: backdrop, which the border, in the shade of a vignette, lacks).
MIN_BLOB_SHARE, MAX_BLOB_SHARE = 1e-4, 0.02
#: It must hold at least this share of all the distinct pixels of the photo (one product, not one of
#: many specks of a texture's rarer colours), fill at least this share of its box (not a diffuse
#: web of grain), and stand out from a ring around it (the ring's mean likeness minus its own) by
#: at least this much.
MIN_LONE_SHARE, MIN_BLOB_FILL, MIN_BLOB_STAND_OUT = 0.6, 0.3, 0.35


def lone_distinct_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1, pixels of ``rgb``) of the one compact blob of colours the frame's
    border lacks, when there is exactly one that stands out from its surroundings; else None.
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, LIKENESS_SIDE / max(h, w))
    small = rgb if scale == 1.0 else cv2.resize(
        rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    if min(sh, sw) < 16:
        return None
    like = border_likeness(small)
    distinct = (like < DISTINCT_LIKENESS).view(np.uint8)
    total = int(np.count_nonzero(distinct))
    if total == 0:
        return None
    count, labels, stats, _ = cv2.connectedComponentsWithStats(distinct, connectivity=8)
    main = int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) + 1
    x, y, bw, bh, area = (int(v) for v in stats[main])
    if not MIN_BLOB_SHARE * sh * sw <= area <= MAX_BLOB_SHARE * sh * sw:
        return None
    if area < MIN_LONE_SHARE * total or area < MIN_BLOB_FILL * bw * bh:
        return None
    blob = labels == main
    r = max(3, round(0.5 * max(bw, bh)))
    ring = (cv2.dilate(blob.view(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
            > 0) & ~blob
    if not ring.any() or float(like[ring].mean() - like[blob].mean()) < MIN_BLOB_STAND_OUT:
        return None
    return (int(x / scale), int(y / scale), min(w, int(np.ceil((x + bw) / scale))),
            min(h, int(np.ceil((y + bh) / scale))))
