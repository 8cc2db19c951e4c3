"""Check an encoded image against a marketplace preset, from the bytes actually written.

The checker decodes the file like a marketplace robot would and measures.
Every check reports its ``status`` (``passed``, ``failed`` or ``skipped``),
its measured ``value`` and the ``expected`` value or range, so a failed
report says what to change. ``passed`` (per check and for the report) is
computed over the checks that ran.

What was asked for decides which checks apply. A transparent file
(``background=transparent``) cannot pass "no alpha", "white frame" or
"pure white background": those are reported ``skipped`` with a ``reason``
(never ``passed``), and their transparent counterparts run instead (the
frame and the background must be fully transparent). A cut-out at the
photo's own geometry (``fit=original``) skips the canvas checks (square,
dimensions, fill, centring, edge gaps), and the frame check when the
product itself reaches the frame.

The product's box (for fill and centring) follows the one definition in
``coverage``: the pixels the product covers. From bytes alone the checker
finds them as the pixels that are not exactly white (any alpha, in a
transparent file), which a lossy codec blurs: ringing adds a few off-white
px around every edge, so in JPEG the box of the visibly dark pixels is
used instead, and that box loses a white product's near-white rim (a
white ball once measured fill 0.837 against its true 0.86). Our own
renderer therefore hands the checker the box it placed (a :class:`Claim`),
and the checker uses it only after verifying it against the pixels: every
claimed edge must have product pixels (not exactly white) within
:data:`CLAIM_TOLERANCE_PX`, and no visibly dark pixel may lie outside the
claimed product and shadow boxes. A claim the pixels contradict is ignored
and the measured box is used (reported as ``product_box.source``).

Background pixels are those farther than :data:`PRODUCT_CLEARANCE_PX` from
any pixel that is visibly not white (a channel below :data:`PRODUCT_LEVEL`)
and connected to the frame (an enclosed highlight is product, not backdrop).
They must be exactly (255, 255, 255), with one exemption for lossy files:
inside an 8x8 block shared with the product's edge no JPEG can promise exact
white (measured: q100 4:4:4 still leaves 0.07-0.17 % of background pixels 1-5
levels off there), so those pixels are counted in the report but not judged. With a verified claim the product's edge
is where the renderer drew any coverage (a faint edge pixel the encoder lightened past
:data:`PRODUCT_LEVEL` still shares its block with the product), and solidly covered pixels are product
whatever their colour; partially covered pixels outside those blocks are judged as before.
Ringing that leaks *beyond* the edge's own block (4:2:0 chroma, low quality)
fails the check; the encoder avoids it with 4:4:4 chroma.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from .coverage import COVERAGE_EPS_BYTE, Box, product_box
from .presets import Preset, preset_for

if TYPE_CHECKING:
    from .spec import RenderSpec

logger = logging.getLogger(__name__)

#: A pixel with any channel below this is product (or its shadow), not backdrop.
PRODUCT_LEVEL = 250
#: The same for a transparent file: alpha above this is product (or its shadow).
ALPHA_LEVEL = 255 - PRODUCT_LEVEL
#: Antialiased product edges legitimately blend into white over this many px.
PRODUCT_CLEARANCE_PX = 1
#: JPEG's transform block: ringing from an edge stays inside its block at
#: 4:4:4, but 4:2:0 chroma (16 px blocks) carries it into the next one.
JPEG_BLOCK = 8
#: The outer frame (share of the side) must be exactly white: no borders, no shadow at the edges.
FRAME_SHARE = 0.02
#: The product's bounding box centre may sit this far (share of the side) from the canvas centre.
MAX_CENTRE_OFFSET = 0.01

#: Claimed coverage at or above this (8-bit) is solid product: exempt from the backdrop's white.
SOLID_COVERAGE = 255 - COVERAGE_EPS_BYTE
#: A claimed box edge must have product pixels within this many px (a white
#: product's outermost antialiased pixels may round to exact white).
CLAIM_TOLERANCE_PX = 2

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


def _webp_lossless(data: bytes) -> bool:
    """Whether a WebP file's image chunk is VP8L (lossless) rather than VP8 (lossy)."""
    pos = 12
    while pos + 8 <= len(data):
        fourcc, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if fourcc in (b"VP8L", b"VP8 "):
            return fourcc == b"VP8L"
        pos += 8 + size + (size & 1)
    return False


@dataclass(frozen=True, eq=False)
class Claim:
    """What our renderer says it drew, for the checker to verify against the pixels.

    ``coverage`` (HxW uint8, the canvas's size) is the product's coverage as drawn: where it is solid
    the pixel is product whatever its colour, so a white product's near-white edge (solid, 251-254)
    is neither lost from its box nor taken for an off-white backdrop. Partially covered pixels are
    still judged by their colour: a faint veil left by a soft matte fails as before.
    """

    product_box: Box
    shadow_box: Box | None = None
    coverage: np.ndarray | None = None


@dataclass(frozen=True)
class _Target:
    """What the file is checked for: the preset plus the parts of the request that change the rules."""

    preset: Preset
    transparent: bool = False
    original: bool = False
    shadow: str = "remove"


def frame_px(side: int) -> int:
    """Width of the outer frame that must be exactly background, for a canvas of ``side`` px."""
    return max(2, round(FRAME_SHARE * side))


def _item(passed: bool, value: Any, expected: Any) -> dict[str, Any]:
    return {"passed": bool(passed), "status": "passed" if passed else "failed", "value": value, "expected": expected}


def _skipped(reason: str, expected: Any = None) -> dict[str, Any]:
    return {"passed": None, "status": "skipped", "value": None, "expected": expected, "reason": reason}


def failed_checks(report: dict[str, Any]) -> list[str]:
    """Names of the checks that ran and failed."""
    return sorted(name for name, item in report["checks"].items() if _status(item) == "failed")


def _status(item: dict[str, Any]) -> str:
    # Items added by other stages (Gemini's fidelity check) may carry only "passed".
    return item.get("status") or ("passed" if item.get("passed") else "failed")


_TRANSPARENT = "a transparent background was asked for (background=transparent)"
_ORIGINAL = "the photo's own geometry was asked for (fit=original)"


def _profile_name(icc: bytes | None) -> str | None:
    if not icc:
        return None
    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except (ImageCms.PyCMSError, OSError):
        return "unreadable profile"


def _file_checks(im: Image.Image, data: bytes, target: _Target) -> dict[str, dict[str, Any]]:
    preset = target.preset
    fmt = _FORMAT_NAMES.get(im.format or "", (im.format or "unknown").lower())
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    bits = 16 if im.mode.startswith("I;16") or im.mode in ("I", "F") else 8
    profile = _profile_name(im.info.get("icc_profile"))
    w, h = im.size
    # The canvas's shape and long side (a portrait preset such as Zalando's is not square).
    side_ok = preset.accepts_canvas(w, h)
    ratio = "width == height" if preset.square else "width:height = %d:%d" % preset.canvas_ratio
    shape_ok = w == h if preset.square else abs(preset.canvas(max(w, h))[0] - w) <= 1 and h >= w
    mode = "RGBA" if target.transparent else "RGB"
    checks = {
        "format": _item(fmt in preset.formats, fmt, list(preset.formats)),
        "mode": _item(im.mode == mode, im.mode, mode),
        "no_alpha": _skipped(_TRANSPARENT, False) if target.transparent else _item(not has_alpha, has_alpha, False),
        "bit_depth": _item(bits == 8, bits, 8),
        "color_profile": _item(profile is None or "srgb" in profile.lower(),
                               profile or "none (sRGB by convention)", "sRGB"),
        ("square" if preset.square else "aspect"): _skipped(_ORIGINAL, ratio) if target.original
        else _item(shape_ok, [w, h], ratio),
        "dimensions": _skipped(_ORIGINAL, [preset.min_size, preset.max_size]) if target.original
        else _item(side_ok, [w, h], [preset.min_size, preset.max_size]),
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


def _codec_blocks(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown to whole 8x8 JPEG blocks (aligned at the top-left corner)."""
    h, w = mask.shape
    hb, wb = -(-h // JPEG_BLOCK), -(-w // JPEG_BLOCK)
    padded = np.zeros((hb * JPEG_BLOCK, wb * JPEG_BLOCK), np.uint8)
    padded[:h, :w] = mask
    # An exact 8:1 area reduction is the block mean: non-zero iff any pixel is set.
    blocks = cv2.resize(padded * np.uint8(255), (wb, hb), interpolation=cv2.INTER_AREA)
    grown = cv2.resize(blocks, (wb * JPEG_BLOCK, hb * JPEG_BLOCK), interpolation=cv2.INTER_NEAREST)
    return grown[:h, :w] > 0


def _grown(box: Box, by: int, shape: tuple[int, int]) -> Box:
    h, w = shape
    return Box(max(0, box.left - by), max(0, box.top - by), min(w, box.right + by), min(h, box.bottom + by))


def _verified(claim: Claim, present: np.ndarray, strong: np.ndarray, lossy: bool) -> bool:
    """Whether the pixels bear out the claimed boxes (see the module docstring)."""
    h, w = present.shape
    p, t = claim.product_box, CLAIM_TOLERANCE_PX
    if p.left < 0 or p.top < 0 or p.right > w or p.bottom > h or p.width <= 0 or p.height <= 0:
        return False
    # Not too big: product pixels reach each claimed edge.
    edges = (
        present[p.top:p.bottom, p.left:min(p.right, p.left + t + 1)],
        present[p.top:p.bottom, max(p.left, p.right - t - 1):p.right],
        present[p.top:min(p.bottom, p.top + t + 1), p.left:p.right],
        present[max(p.top, p.bottom - t - 1):p.bottom, p.left:p.right],
    )
    if not all(edge.any() for edge in edges):
        return False
    # Not too small: nothing visibly dark outside what was claimed (JPEG
    # ringing at a hard dark edge reaches 5+ levels a few px out, inside the
    # edge's own blocks: a lossy file's claim may be that much tighter).
    outside = strong.copy()
    reach = JPEG_BLOCK if lossy else PRODUCT_CLEARANCE_PX
    for box in (claim.product_box, claim.shadow_box):
        if box is not None:
            g = _grown(box, reach, (h, w))
            outside[g.top:g.bottom, g.left:g.right] = False
    if outside.any():
        return False
    if claim.coverage is None:
        return True
    cov = claim.coverage
    # The coverage is the one the box was taken from (coverage.product_box), and every visibly dark
    # product pixel lies in it (or in the claimed shadow), give or take the codec's reach.
    if cov.shape != (h, w) or product_box(cov > 0) != claim.product_box:
        return False
    k = 2 * reach + 1
    outside = strong & ~(cv2.dilate((cov > 0).view(np.uint8), np.ones((k, k), np.uint8)) > 0)
    if claim.shadow_box is not None:
        s = _grown(claim.shadow_box, reach, (h, w))
        outside[s.top:s.bottom, s.left:s.right] = False
    return not outside.any()


def _pixel_checks(pixels: np.ndarray, target: _Target, lossy: bool,
                  claim: Claim | None) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    preset = target.preset
    h, w = pixels.shape[:2]
    side = max(h, w)
    if target.transparent:
        # Product (or shadow) is any alpha; "visibly there" is alpha above the faint level.
        level = pixels[..., 3] if pixels.ndim == 3 and pixels.shape[2] == 4 else np.full((h, w), 255, np.uint8)
        present = level > 0
        strong = level > ALPHA_LEVEL
        frame_name, background_name, off_name = "frame_transparent", "background_transparent", "visible_pixels"
    else:
        # White means all three channels at 255, i.e. the darkest channel at 255.
        c0, c1, c2 = cv2.split(pixels[..., :3])
        darkest = cv2.min(cv2.min(c0, c1), c2)
        present = darkest < 255
        strong = darkest < PRODUCT_LEVEL
        frame_name, background_name, off_name = "frame_white", "background_white", "off_white_pixels"

    verified = claim is not None and _verified(claim, present, strong, lossy)
    if verified:
        assert claim is not None
        box: Box | None = claim.product_box
        source = "renderer, verified against the pixels"
        shadow_box = claim.shadow_box
    else:
        box = product_box(strong if lossy else present)
        source = "measured"
        shadow_box = None
        if claim is not None:
            logger.warning("The renderer's product box %s is not borne out by the pixels", claim.product_box)

    checks: dict[str, dict[str, Any]] = {}
    if target.transparent:
        checks["frame_white"] = _skipped(_TRANSPARENT, 0)
        checks["background_white"] = _skipped(_TRANSPARENT, {"off_white_pixels": 0})

    frame = frame_px(side)
    frame_off = sum(int(np.count_nonzero(strip)) for strip in (
        present[:frame], present[-frame:], present[frame:-frame, :frame], present[frame:-frame, -frame:]
    ))
    product_in_frame = box is not None and (
        box.left < frame or box.top < frame or box.right > w - frame or box.bottom > h - frame)
    if preset.may_touch_edge and not target.original:
        # JD wants the product within 10 px of the edge, i.e. inside this
        # frame; there the backdrop check below covers the frame.
        pass
    elif target.original and product_in_frame:
        checks[frame_name] = _skipped(_ORIGINAL + " and the product itself reaches the frame there", 0)
    else:
        checks[frame_name] = _item(frame_off == 0, frame_off, 0)

    k = 2 * PRODUCT_CLEARANCE_PX + 1
    product = strong
    edge_of = strong
    if verified and claim is not None and claim.coverage is not None:
        # Solid product is product whatever its colour (a white product's near-white edge).
        product = strong | (claim.coverage >= SOLID_COVERAGE)
        # The product's edge, for the codec's blocks, is where it was drawn at all: a faint edge pixel
        # that the encoder lightened past PRODUCT_LEVEL still shares its block with the product.
        edge_of = product | (claim.coverage > 0)
    near = cv2.dilate(product.view(np.uint8), np.ones((k, k), np.uint8))
    if shadow_box is not None:
        # A drawn shadow is meant to be there (the frame check above still holds it off the edges).
        near[shadow_box.top:shadow_box.bottom, shadow_box.left:shadow_box.right] = 1
    # A lossy codec cannot reproduce exact white inside a block it shares with
    # the product's edge (q100 4:4:4 still leaves 1-3 levels of rounding
    # ringing there, and decoders differ by one level): those pixels are
    # reported, not judged. Every other background pixel must be exact.
    if lossy:
        edge = near if edge_of is strong else cv2.dilate(edge_of.view(np.uint8), np.ones((k, k), np.uint8))
        exempt = _codec_blocks(edge > 0)
    else:
        exempt = near > 0
    # The backdrop is what surrounds the product, reached from the frame: a
    # blown highlight enclosed by the product is product, however white.
    # A frame of padding links every border pixel, so one flood fill reaches them all.
    flood = np.zeros((h + 4, w + 4), np.uint8)
    flood[2:-2, 2:-2] = near
    cv2.floodFill(flood, None, (0, 0), 2, flags=4)
    surrounding = flood[2:-2, 2:-2] == 2
    background = surrounding & ~exempt
    off_count = int(np.count_nonzero(present & background))
    edge_off = present & exempt & surrounding
    edge_count = int(np.count_nonzero(edge_off))
    if target.transparent:
        deviation = int(pixels[..., 3][edge_off].max()) if edge_count and pixels.ndim == 3 else 0
    else:
        deviation = int(255 - darkest[edge_off].min()) if edge_count else 0
    checks[background_name] = _item(
        off_count == 0,
        {
            off_name: off_count,
            "background_pixels": int(np.count_nonzero(background)),
            "edge_block_" + off_name: edge_count,
            "edge_block_max_deviation": deviation,
        },
        {off_name: 0},
    )

    if not preset.allows_shadow:
        drawn = target.shadow != "remove"
        checks["no_shadow"] = _item(not drawn, "drawn" if drawn else "none", "none")

    if box is None:
        checks["product_present"] = _item(False, False, True)
        return checks, None
    box_report = {"box": box.as_list(), "source": source}
    if target.original:
        for name in ("fill", "centred", "edge_gap" if preset.may_touch_edge else "not_touching_edge"):
            checks[name] = _skipped(_ORIGINAL)
        return checks, box_report
    left, top, right, bottom = box.left, box.top, box.right - 1, box.bottom - 1
    fill = max(box.width / w, box.height / h)
    low, high = preset.fill_band
    checks["fill"] = _item(low <= fill <= high, round(fill, 4), [low, high])
    gaps = {"left": left, "right": w - 1 - right, "top": top, "bottom": h - 1 - bottom}
    if preset.may_touch_edge:
        long_axis = ("left", "right") if box.width / w >= box.height / h else ("top", "bottom")
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
    return checks, box_report


def _target(target: RenderSpec | Preset | str) -> _Target:
    if isinstance(target, Preset):
        return _Target(target)
    if isinstance(target, str):
        return _Target(preset_for(target))
    return _Target(target.preset_def, transparent=target.transparent, original=target.fit == "original",
                   shadow=target.shadow)


def _decode_pixels(data: bytes, im: Image.Image, fmt: str, transparent: bool) -> np.ndarray:
    """The file's pixels as a viewer shows them: HxWx3 (white checks) or HxWx4 (transparent checks)."""
    pixels = None
    if fmt in ("jpeg", "png") and im.mode == ("RGBA" if transparent else "RGB"):
        # OpenCV decodes ~2x faster than Pillow plus its array copy; the
        # channel order (BGR) does not matter to checks that look at the
        # darkest channel or at alpha.
        flags = (cv2.IMREAD_UNCHANGED if transparent else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    channels = 4 if transparent else 3
    if pixels is None or pixels.shape != (im.height, im.width, channels):
        # Measure what a viewer would show ("mode"/"no_alpha" already judged
        # the channels); a broken file raises here.
        pixels = np.asarray(im.convert("RGBA" if transparent else "RGB"))
    return pixels


def check(data: bytes, target: RenderSpec | Preset | str, *, claim: Claim | None = None) -> dict[str, Any]:
    """Compliance report for ``data`` (the encoded file) against what was asked for.

    ``target`` is the output's :class:`~generation.engine.spec.RenderSpec`
    (or just a preset, or its name, for a white canvas). ``claim`` is our
    renderer's own account of what it drew, verified before use. Returns
    ``{"preset": name, "passed": bool, "checks": {name: {"passed", "status",
    "value", "expected"[, "reason"]}}, "product_box": {"box", "source"} | None}``;
    everything in it is JSON-serialisable.
    """
    goal = _target(target)
    preset = goal.preset
    try:
        im = Image.open(io.BytesIO(data))  # header only
        checks = _file_checks(im, data, goal)
        fmt = checks["format"]["value"]
        pixels = _decode_pixels(data, im, fmt, goal.transparent)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        logger.warning("Compliance check could not decode the output: %s", exc)
        checks = {"decodable": _item(False, str(exc), "a JPEG, PNG or WebP image")}
        return {"preset": preset.name, "passed": False, "checks": checks, "product_box": None}
    lossy = fmt == "jpeg" or (fmt == "webp" and not _webp_lossless(data))
    pixel_checks, box_report = _pixel_checks(pixels, goal, lossy, claim)
    checks.update(pixel_checks)
    return {
        "preset": preset.name,
        "passed": all(c["status"] != "failed" for c in checks.values()),
        "checks": checks,
        "product_box": box_report,
    }
