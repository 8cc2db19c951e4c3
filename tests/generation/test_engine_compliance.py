"""The compliance checker: a compliant file passes, and each negative control fails the right check."""
from __future__ import annotations

import io
import json
from typing import Any

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
