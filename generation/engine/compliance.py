"""Check an encoded image against a marketplace preset, from the bytes actually written.

The checker knows nothing about how the image was made (no mask, no
options beyond the preset): it decodes the file like a marketplace robot
would and measures. Every check reports its measured ``value`` and the
``expected`` value or range, so a failed report says what to change.

Background pixels are those farther than :data:`PRODUCT_CLEARANCE_PX` from
any pixel that is clearly not white (a channel below :data:`PRODUCT_LEVEL`).
They must be exactly (255, 255, 255); JPEG ringing next to the product makes
some of them 252-254, which is why :data:`MAX_OFFWHITE_SHARE` exists and why
the encoder raises the quality until the written file passes.
"""
from __future__ import annotations

import io
import logging
from typing import Any, Mapping

import cv2
import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from .presets import Preset, preset_for

logger = logging.getLogger(__name__)

#: A pixel with any channel below this is product (or its shadow), not backdrop.
PRODUCT_LEVEL = 250
#: Antialiased product edges legitimately blend into white over this many px.
PRODUCT_CLEARANCE_PX = 1
#: Share of background pixels allowed to be off-white by JPEG ringing. Measured
#: on 2000 px canvases: 0.2-0.3 % at q95 4:4:4 and 0.5-0.8 % at q90-95 with
#: 4:2:0 chroma, 0.02-0.05 % at q100 4:4:4 (see docs/benchmarks/engine.md).
MAX_OFFWHITE_SHARE = 0.0005
#: The outer frame (share of the side) must be exactly white: no borders, no shadow at the edges.
FRAME_SHARE = 0.02
#: The product's bounding box centre may sit this far (share of the side) from the canvas centre.
MAX_CENTRE_OFFSET = 0.01

_FORMAT_NAMES = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}

# IJG standard luminance table (natural order); Pillow and libjpeg scale it by quality.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])


def estimate_jpeg_quality(quant_table: list[int] | np.ndarray) -> int:
    """The IJG quality (1-100) whose scaled luminance table best matches ``quant_table``.

    Tables are compared sorted, so zigzag or natural order does not matter.
    """
    actual = np.sort(np.asarray(quant_table, dtype=np.int64))
    best, best_err = 0, None
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        table = np.clip((_IJG_LUMA * scale + 50) // 100, 1, 255)
        err = int(np.abs(np.sort(table) - actual).sum())
        if best_err is None or err < best_err:
            best, best_err = q, err
    return best


def _item(passed: bool, value: Any, expected: Any) -> dict[str, Any]:
    return {"passed": bool(passed), "value": value, "expected": expected}


def _profile_name(icc: bytes | None) -> str | None:
    if not icc:
        return None
    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except (ImageCms.PyCMSError, OSError):
        return "unreadable profile"


def _file_checks(im: Image.Image, data: bytes, preset: Preset) -> dict[str, dict[str, Any]]:
    fmt = _FORMAT_NAMES.get(im.format or "", (im.format or "unknown").lower())
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    bits = 16 if im.mode.startswith("I;16") or im.mode in ("I", "F") else 8
    profile = _profile_name(im.info.get("icc_profile"))
    w, h = im.size
    side_ok = preset.min_size <= min(w, h) and max(w, h) <= preset.max_size
    checks = {
        "format": _item(fmt in preset.formats, fmt, list(preset.formats)),
        "mode": _item(im.mode == "RGB", im.mode, "RGB"),
        "no_alpha": _item(not has_alpha, has_alpha, False),
        "bit_depth": _item(bits == 8, bits, 8),
        "color_profile": _item(profile is None or "srgb" in profile.lower(),
                               profile or "none (sRGB by convention)", "sRGB"),
        "square": _item(w == h, [w, h], "width == height"),
        "dimensions": _item(side_ok, [w, h], [preset.min_size, preset.max_size]),
        "bytes": _item(
            (preset.min_bytes is None or len(data) >= preset.min_bytes)
            and (preset.max_bytes is None or len(data) <= preset.max_bytes),
            len(data), [preset.min_bytes, preset.max_bytes],
        ),
    }
    if preset.check_jpeg_quality:
        quality = None
        if fmt == "jpeg" and getattr(im, "quantization", None):
            quality = estimate_jpeg_quality(im.quantization[0])
        checks["jpeg_quality"] = _item(
            fmt != "jpeg" or (quality is not None and quality >= preset.min_jpeg_quality),
            quality, f">= {preset.min_jpeg_quality}",
        )
    return checks


def _pixel_checks(rgb: np.ndarray, preset: Preset) -> dict[str, dict[str, Any]]:
    h, w = rgb.shape[:2]
    side = max(h, w)
    product = rgb.min(axis=2) < PRODUCT_LEVEL
    not_white = (rgb != 255).any(axis=2)

    frame = max(2, round(FRAME_SHARE * side))
    ring = np.ones((h, w), bool)
    ring[frame:-frame, frame:-frame] = False
    frame_off = int(np.count_nonzero(not_white & ring))
    checks = {"frame_white": _item(frame_off == 0, frame_off, 0)}

    k = 2 * PRODUCT_CLEARANCE_PX + 1
    near = cv2.dilate(product.view(np.uint8), np.ones((k, k), np.uint8)) > 0
    background = ~near
    bg_count = int(np.count_nonzero(background))
    off = not_white & background
    off_count = int(np.count_nonzero(off))
    share = off_count / bg_count if bg_count else 1.0
    worst = int(255 - rgb[off].min()) if off_count else 0
    checks["background_white"] = _item(
        bg_count > 0 and share <= MAX_OFFWHITE_SHARE,
        {"off_white_share": round(share, 6), "off_white_pixels": off_count, "max_deviation": worst},
        {"off_white_share": f"<= {MAX_OFFWHITE_SHARE}"},
    )

    rows, cols = np.flatnonzero(product.any(axis=1)), np.flatnonzero(product.any(axis=0))
    if rows.size == 0:
        checks["product_present"] = _item(False, False, True)
        return checks
    top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    box_w, box_h = right - left + 1, bottom - top + 1
    fill = max(box_w / w, box_h / h)
    low, high = preset.fill_band
    checks["fill"] = _item(low <= fill <= high, round(fill, 4), [low, high])
    gaps = {"left": left, "right": w - 1 - right, "top": top, "bottom": h - 1 - bottom}
    if preset.may_touch_edge:
        long_axis = ("left", "right") if box_w / w >= box_h / h else ("top", "bottom")
        gap = max(gaps[long_axis[0]], gaps[long_axis[1]])
        checks["edge_gap"] = _item(
            preset.max_edge_gap_px is None or gap <= preset.max_edge_gap_px,
            gap, f"<= {preset.max_edge_gap_px} px on the long axis",
        )
    else:
        nearest = min(gaps.values())
        checks["not_touching_edge"] = _item(nearest >= 1, nearest, ">= 1 px")
    offset = max(abs((left + right) / 2 - (w - 1) / 2), abs((top + bottom) / 2 - (h - 1) / 2))
    limit = max(2.0, MAX_CENTRE_OFFSET * side)
    checks["centred"] = _item(offset <= limit, round(offset, 1), f"<= {limit:g} px")
    return checks


def check(data: bytes, preset_or_options: str | Preset | Mapping[str, Any]) -> dict[str, Any]:
    """Compliance report for ``data`` (the encoded file) against a preset.

    Returns ``{"preset": name, "passed": bool, "checks": {name: {"passed",
    "value", "expected"}}}``; everything in it is JSON-serialisable.
    """
    preset = preset_or_options if isinstance(preset_or_options, Preset) else preset_for(preset_or_options)
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        logger.warning("Compliance check could not decode the output: %s", exc)
        checks = {"decodable": _item(False, str(exc), "a JPEG, PNG or WebP image")}
        return {"preset": preset.name, "passed": False, "checks": checks}
    checks = _file_checks(im, data, preset)
    if im.mode != "RGB":
        # Measure what a viewer would show; "mode"/"no_alpha" already failed.
        im = im.convert("RGBA").convert("RGB") if "A" in im.mode or "transparency" in im.info else im.convert("RGB")
    checks.update(_pixel_checks(np.asarray(im), preset))
    return {
        "preset": preset.name,
        "passed": all(c["passed"] for c in checks.values()),
        "checks": checks,
    }
