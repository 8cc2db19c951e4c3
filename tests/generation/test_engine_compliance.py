"""The compliance checker: a compliant file passes, and each negative control fails the right check."""
from __future__ import annotations

import io
import json
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from generation.engine.compliance import check, estimate_jpeg_quality
from generation.engine.spec import parse_job


def canvas(side: int = 2000, *, fill: float = 0.86, colour: tuple[int, int, int] = (40, 70, 160),
           offset: tuple[int, int] = (0, 0), height: int | None = None,
           background: int = 255, texture: float = 0.0) -> np.ndarray:
    """A white canvas with a centred disc-topped box of the given fill (long side / canvas side)."""
    h = height or side
    img = np.full((h, side, 3), background, np.uint8)
    long_side = round(fill * min(side, h))
    y0 = (h - long_side) // 2 + offset[1]
    x0 = (side - long_side) // 2 + offset[0]
    yy, xx = np.mgrid[0:long_side, 0:long_side]
    r = long_side / 2
    # A rounded silhouette so the edges are diagonal as well as straight (ringing in all directions).
    inside = ((yy - r) ** 2 + (xx - r) ** 2 <= r * r) | (yy >= r)
    rng = np.random.default_rng(1)
    paint = np.asarray(colour, np.float32) + rng.normal(0, texture, (long_side, long_side, 3)) if texture else \
        np.broadcast_to(np.asarray(colour, np.float32), (long_side, long_side, 3))
    region = img[max(y0, 0):y0 + long_side, max(x0, 0):x0 + long_side]
    sub = inside[max(-y0, 0):max(-y0, 0) + region.shape[0], max(-x0, 0):max(-x0, 0) + region.shape[1]]
    region[sub] = np.clip(paint[max(-y0, 0):, max(-x0, 0):][: region.shape[0], : region.shape[1]][sub], 0, 255)
    return img


def encode(img: np.ndarray | Image.Image, fmt: str = "JPEG", **params: Any) -> bytes:
    im = img if isinstance(img, Image.Image) else Image.fromarray(img)
    if fmt == "JPEG":
        params.setdefault("quality", 95)
        params.setdefault("subsampling", 0)
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def failing(report: dict[str, Any]) -> set[str]:
    return {name for name, item in report["checks"].items() if not item["passed"]}


def test_it_passes_a_compliant_jpeg_and_reports_json_with_measured_values() -> None:
    report = check(encode(canvas()), "amazon")
    assert failing(report) == set()
    assert report["passed"] is True and report["preset"] == "amazon"
    assert report["checks"]["square"]["value"] == [2000, 2000]
    # JPEG ringing on the fixture's hard (unantialiased) edge adds a few px.
    assert report["checks"]["fill"]["value"] == pytest.approx(0.86, abs=0.005)
    assert report["checks"]["background_white"]["value"]["off_white_pixels"] == 0
    json.dumps(report)


def test_it_accepts_a_render_spec_or_a_preset_name() -> None:
    data = encode(canvas(1600, fill=0.85))
    assert check(data, parse_job({"preset": "ebay", "size": 1600}).outputs[0])["passed"] is True
    assert check(data, "ebay")["passed"] is True


def test_it_fails_an_off_white_backdrop() -> None:
    report = check(encode(canvas(background=250), "PNG"), "amazon")
    assert {"frame_white", "background_white"} <= failing(report)


def test_it_fails_4_2_0_chroma_ringing_beyond_the_edge_block_but_passes_4_4_4() -> None:
    img = canvas(colour=(200, 30, 40))
    assert "background_white" in failing(check(encode(img, quality=95, subsampling=2), "amazon"))
    report = check(encode(img, quality=95, subsampling=0), "amazon")
    assert report["passed"] is True
    # The edge blocks' rounding is measured and reported, not hidden.
    assert report["checks"]["background_white"]["value"]["edge_block_off_white_pixels"] > 0


def test_it_holds_lossless_files_to_exact_white_up_to_the_rim() -> None:
    img = canvas()
    img[100, 1000] = (254, 255, 255)  # one stray pixel, far from the product and the frame
    report = check(encode(img, "PNG"), "amazon")
    assert report["checks"]["background_white"]["value"]["off_white_pixels"] == 1
    assert failing(report) == {"background_white"}


def test_it_fails_a_small_product() -> None:
    report = check(encode(canvas(fill=0.5)), "amazon")
    assert failing(report) == {"fill"}
    assert report["checks"]["fill"]["value"] == pytest.approx(0.5, abs=0.005)


def test_it_fails_a_non_square_image() -> None:
    assert "square" in failing(check(encode(canvas(2000, height=1800)), "amazon"))


def test_it_fails_an_alpha_channel() -> None:
    rgba = Image.fromarray(canvas()).convert("RGBA")
    assert {"mode", "no_alpha"} <= failing(check(encode(rgba, "PNG"), "amazon"))


def test_it_fails_a_cmyk_jpeg() -> None:
    cmyk = Image.fromarray(canvas()).convert("CMYK")
    assert "mode" in failing(check(encode(cmyk, "JPEG", quality=95), "amazon"))


def test_it_fails_a_16_bit_png() -> None:
    grey = (canvas()[..., 0].astype(np.uint16) * 257)
    assert {"bit_depth", "mode"} <= failing(check(encode(Image.fromarray(grey), "PNG"), "walmart"))


def test_it_fails_a_non_srgb_profile() -> None:
    xyz = ImageCms.ImageCmsProfile(ImageCms.createProfile("XYZ")).tobytes()
    report = check(encode(canvas(), icc_profile=xyz), "amazon")
    assert failing(report) == {"color_profile"}


def test_it_fails_a_canvas_below_the_presets_minimum() -> None:
    report = check(encode(canvas(800)), "amazon")
    assert failing(report) == {"dimensions"}
    assert report["checks"]["dimensions"]["expected"] == [1000, 4000]


def test_it_fails_too_many_bytes() -> None:
    noisy = canvas(800, fill=0.85, texture=60.0)
    data = encode(noisy, quality=100)
    assert len(data) > 300_000
    report = check(data, "taobao")
    assert failing(report) == {"bytes"}
    assert report["checks"]["bytes"]["value"] == len(data)


def test_it_fails_too_few_bytes_for_taobao() -> None:
    report = check(encode(canvas(800, fill=0.85), quality=75), "taobao")
    assert failing(report) == {"bytes"}


def test_it_fails_a_format_the_preset_does_not_list() -> None:
    assert failing(check(encode(canvas(1600, fill=0.85), "PNG"), "ebay")) == {"format"}


def test_it_fails_a_product_touching_the_edge() -> None:
    report = check(encode(canvas(fill=0.9, offset=(200, 0)), "PNG"), "amazon")
    assert {"not_touching_edge", "frame_white", "centred"} <= failing(report)


def test_it_fails_an_off_centre_product() -> None:
    report = check(encode(canvas(fill=0.86, offset=(60, 0)), "PNG"), "amazon")
    assert failing(report) == {"centred"}


def test_it_checks_jd_s_gap_instead_of_a_white_frame() -> None:
    near = check(encode(canvas(800, fill=(800 - 10) / 800), "PNG"), "jd")
    assert failing(near) == set()
    assert near["checks"]["edge_gap"]["value"] == 5
    far = check(encode(canvas(800, fill=0.85)), "jd")
    assert failing(far) == {"edge_gap"}


def test_it_fails_ebay_below_quality_90() -> None:
    img = canvas(1600, fill=0.85)
    low = check(encode(img, quality=80), "ebay")
    assert failing(low) == {"jpeg_quality"}
    assert low["checks"]["jpeg_quality"]["value"] == 80
    assert check(encode(img, quality=92), "ebay")["checks"]["jpeg_quality"]["value"] == 92


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95, 100])
def test_it_estimates_the_jpeg_quality_from_the_tables(quality: int) -> None:
    im = Image.open(io.BytesIO(encode(canvas(64, fill=0.5), quality=quality)))
    assert estimate_jpeg_quality(im.quantization[0]) == quality


def test_it_reports_undecodable_bytes_as_a_failed_check() -> None:
    report = check(b"\xff\xd8\xff not really a jpeg", "amazon")
    assert report["passed"] is False
    assert failing(report) == {"decodable"}


def _rgba(img: np.ndarray, alpha: np.ndarray) -> bytes:
    return encode(Image.fromarray(np.dstack([img, alpha]), "RGBA"), "PNG")


def test_it_skips_what_a_transparent_file_cannot_pass_and_checks_its_alpha_instead() -> None:
    img = canvas(1000)
    alpha = np.where(img.min(axis=2) < 255, 255, 0).astype(np.uint8)
    img[alpha == 0] = 255
    transparent = parse_job({"format": "png", "background": "transparent", "size": 1000}).outputs[0]
    report = check(_rgba(img, alpha), transparent)
    for name in ("no_alpha", "frame_white", "background_white"):
        assert report["checks"][name]["status"] == "skipped" and report["checks"][name]["passed"] is None
    assert report["checks"]["frame_transparent"]["status"] == "passed"
    assert report["passed"] is True
    # A faint alpha veil far from the product, and alpha at the frame, fail their transparent checks.
    veiled = alpha.copy()
    veiled[5:995, 5:60] = 3
    failed = failing(check(_rgba(img, veiled), transparent))
    assert {"frame_transparent", "background_transparent"} <= failed
    # The same transparent file checked as a white-background output fails as before.
    assert {"mode", "no_alpha"} <= failing(check(_rgba(img, alpha), "amazon"))


def test_it_skips_the_canvas_checks_for_a_cut_out_at_the_photos_geometry() -> None:
    original = parse_job({"format": "png", "fit": "original"}).outputs[0]
    report = check(encode(canvas(1200, height=700, fill=0.5), "PNG"), original)
    for name in ("square", "dimensions", "fill", "centred", "not_touching_edge"):
        assert report["checks"][name]["status"] == "skipped", name
    assert report["checks"]["background_white"]["status"] == "passed"
    assert report["passed"] is True


def test_it_uses_a_claimed_box_only_where_the_pixels_bear_it_out() -> None:
    from generation.engine.compliance import Claim
    from generation.engine.coverage import Box

    img = canvas(1000, fill=0.86)
    # A near-white rim (252) 4 px wide around the product, as a white product's edge looks.
    dark = (img.min(axis=2) < 255).astype(np.uint8)
    rim = cv2.dilate(dark, np.ones((9, 9), np.uint8)) > dark
    img[rim] = 252
    data = encode(img)
    measured = check(data, "amazon")
    cols, rows = np.flatnonzero((dark | rim).any(axis=0)), np.flatnonzero((dark | rim).any(axis=1))
    true = Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    claimed = check(data, "amazon", claim=Claim(true))
    assert claimed["product_box"] == {"box": true.as_list(), "source": "renderer, verified against the pixels"}
    assert claimed["checks"]["fill"]["value"] == round(true.long_side / 1000, 4)
    assert measured["product_box"]["source"] == "measured"
    # A claim wider than anything in the file, or narrower than its dark pixels, is not used.
    for wrong in (Box(true.left - 30, true.top, true.right, true.bottom),
                  Box(true.left + 30, true.top, true.right, true.bottom)):
        assert check(data, "amazon", claim=Claim(wrong))["product_box"]["source"] == "measured"


def test_it_exempts_a_claimed_shadow_from_the_white_background_but_not_the_frame() -> None:
    from generation.engine.compliance import Claim
    from generation.engine.coverage import Box

    img = canvas(1000, fill=0.86)
    dark = img.min(axis=2) < 255
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    product = Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    # A faint grey floor shadow under the product, fading from 200 to 254.
    shade = np.linspace(200, 254, 40).astype(np.uint8)
    img[product.bottom:product.bottom + 40, product.left:product.right] = shade[:, None, None]
    shadow = Box(product.left, product.bottom, product.right, product.bottom + 40)
    data = encode(img, "PNG")
    assert "background_white" in failing(check(data, "amazon"))
    assert failing(check(data, "amazon", claim=Claim(product, shadow))) == set()
    # Reaching the frame is never exempt.
    img[-15:, product.left:product.right] = 250
    assert "frame_white" in failing(check(encode(img, "PNG"), "amazon", claim=Claim(product, shadow)))
