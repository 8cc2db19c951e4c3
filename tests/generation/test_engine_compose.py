"""Rendering a cut-out: transparent and original-geometry cut-outs, shadows, no faint veil, honest boxes."""
from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from generation.engine.compliance import check
from generation.engine.compose import finish
from generation.engine.coverage import coverage_bytes, normalise_matte, product_box
from generation.engine.cut import Cut, ReviewReason
from generation.engine.encode import encode_mask
from generation.engine.spec import RenderSpec, parse_job

from . import scenes


def spec(**options: Any) -> RenderSpec:
    return parse_job(options).outputs[0]


def make_cut(matte: np.ndarray, shadow: np.ndarray | None = None, **extra: Any) -> Cut:
    fields: dict[str, Any] = {"confidence": 1.0, "review_reasons": (), "segmenter": "classical",
                              "model": None, "model_sha256": None}
    fields.update(extra)
    return Cut(matte=matte.astype(np.float32), shadow=shadow, **fields)


def decode(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    return np.asarray(im.convert("RGBA" if im.mode == "RGBA" else "RGB"))


def darkest(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., :3].min(axis=2)


def frame(img: np.ndarray, width: int) -> np.ndarray:
    return np.concatenate([img[:width].ravel(), img[-width:].ravel(), img[:, :width].ravel(), img[:, -width:].ravel()])


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {name: item["status"] for name, item in report["checks"].items()}


def cast_shadow(mask: np.ndarray, *, texture: float = 0.0, reach: float = 0.12) -> np.ndarray:
    """A contact shadow on the floor below the product's base (opacity 0.5), outside the product."""
    h, w = mask.shape
    box = product_box(mask > 0.5)
    assert box is not None
    floor = np.zeros((h, w), np.float32)
    cv2.ellipse(floor, ((box.left + box.right) // 2, box.bottom), (box.width // 2, max(2, int(reach * box.height))),
                0, 0, 360, 0.5, -1)
    floor = cv2.GaussianBlur(floor, (0, 0), 2)
    if texture:
        floor *= 1 + np.random.default_rng(3).normal(0, texture, floor.shape).astype(np.float32)
    return np.clip(floor, 0, 1) * (1 - mask)


@pytest.fixture(scope="module")
def scene() -> scenes.Scene:
    return scenes.plain(240, 180)


# --- cut-outs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "fmt"), [("pinduoduo", "png"), ("shopify", "webp")])
def test_it_writes_a_transparent_cut_out_whose_alpha_is_the_mask(scene: scenes.Scene, preset: str, fmt: str) -> None:
    result = finish(scene.rgb, make_cut(scene.mask), spec(preset=preset, format=fmt, background="transparent",
                                                          fit="original"))
    out = decode(result.data)
    assert out.shape == (180, 240, 4) and (result.width, result.height) == (240, 180)
    mask = np.asarray(Image.open(io.BytesIO(encode_mask(scene.mask))))
    assert np.array_equal(out[..., 3], mask)
    assert np.array_equal(mask, coverage_bytes(normalise_matte(scene.mask)))
    # Nothing hides under zero alpha, and the solid product keeps the photo's own pixels.
    assert (out[..., :3][mask == 0] == 255).all()
    solid = mask == 255
    assert np.array_equal(out[..., :3][solid], scene.rgb[solid])


def test_the_mask_equals_the_alpha_also_where_the_matte_is_faint_at_the_threshold(scene: scenes.Scene) -> None:
    # A feathered rim at 2.0-2.2 % coverage (5/255 as a byte): the renderer drops coverage up to
    # that byte as a resample's veil; the stored mask must drop it too (found on real photos:
    # 6-8 pixels of a million had alpha 0 where the mask said 5).
    matte = scene.mask.astype(np.float32).copy()
    rim = (cv2.dilate((matte > 0.5).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0) & (matte < 0.01)
    matte[rim] = np.linspace(0.0200, 0.0215, int(rim.sum()), dtype=np.float32)
    result = finish(scene.rgb, make_cut(matte), spec(preset="pinduoduo", format="png", background="transparent",
                                                     fit="original"))
    alpha = decode(result.data)[..., 3]
    mask = np.asarray(Image.open(io.BytesIO(encode_mask(matte))))
    assert rim.sum() > 100 and np.array_equal(alpha, mask)
    assert (mask[rim] == 0).all()


def test_it_decontaminates_a_transparent_cut_outs_edge_colours() -> None:
    # A dark blue product photographed on green: its edge pixels are half green.
    mask = scenes.product_mask(200, 150)
    rgb = np.clip(mask[..., None] * np.float32([20, 30, 160]) + (1 - mask[..., None]) * np.float32([40, 200, 40]),
                  0, 255).astype(np.uint8)
    out = decode(finish(rgb, make_cut(mask), spec(format="png", background="transparent", fit="original")).data)
    edge = (out[..., 3] > 40) & (out[..., 3] < 215)
    assert edge.sum() > 50
    # Straight alpha: the edge's colour is the product's blue, not the backdrop's green.
    assert out[..., 1][edge].mean() < 80 and out[..., 2][edge].mean() > 120


def test_it_reports_what_a_transparent_file_cannot_pass_as_skipped_never_passed(scene: scenes.Scene) -> None:
    result = finish(scene.rgb, make_cut(scene.mask), spec(preset="pinduoduo", size=480, background="transparent"))
    report = result.compliance
    assert report is not None
    status = statuses(report)
    for name in ("no_alpha", "frame_white", "background_white"):
        assert status[name] == "skipped"
        assert report["checks"][name]["passed"] is None and report["checks"][name]["reason"]
    assert status["frame_transparent"] == status["background_transparent"] == "passed"
    assert status["mode"] == "passed" and report["checks"]["mode"]["value"] == "RGBA"
    assert status["fill"] == status["centred"] == "passed"
    assert report["passed"] is True
    out = decode(result.data)
    assert (frame(out[..., 3], 10) == 0).all()


def test_it_keeps_the_photos_geometry_and_the_product_where_it_was(scene: scenes.Scene) -> None:
    result = finish(scene.rgb, make_cut(scene.mask), spec(preset="pinduoduo", format="png", fit="original"))
    out = decode(result.data)
    assert out.shape == scene.rgb.shape
    assert product_box(darkest(out) < 255) == product_box(scene.mask >= 0.02)
    solid = scene.mask >= 1.0
    assert np.array_equal(out[solid], scene.rgb[solid])
    assert (out[scene.mask == 0] == 255).all()
    assert result.compliance is not None
    assert {statuses(result.compliance)[n] for n in ("square", "dimensions", "fill", "centred")} == {"skipped"}


# --- shadows ---------------------------------------------------------------------------------------------


def _below_base(out: np.ndarray, rgb: np.ndarray, cut: Cut, render: RenderSpec) -> np.ndarray:
    """The strip of ``out`` just under the product's base, found on the same render without a shadow."""
    bare = decode(finish(rgb, cut, replace(render, shadow="remove", background="white", format="png")).data)
    box = product_box(darkest(bare) < 255)
    assert box is not None
    cols = np.flatnonzero(darkest(bare)[box.bottom - 2] < 200)
    inner = cols[len(cols) // 4: len(cols) - len(cols) // 4]
    level = out[..., 3] if out.shape[2] == 4 else darkest(out)
    return level[box.bottom + 1:box.bottom + 8][:, inner] if out.shape[2] != 4 else \
        out[box.bottom + 1:box.bottom + 8][:, inner]


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_it_draws_a_kept_shadow_under_the_product_and_never_at_the_frame(scene: scenes.Scene, fmt: str) -> None:
    cut = make_cut(scene.mask, cast_shadow(scene.mask))
    render = spec(preset="pinduoduo", size=480, format=fmt, shadow="keep")
    result = finish(scene.rgb, cut, render)
    out = decode(result.data)
    assert _below_base(out, scene.rgb, cut, render).mean() < 200  # a visible grey darkening
    assert (frame(darkest(out), 10) == 255).all()
    assert result.compliance is not None and result.compliance["passed"] is True, result.compliance
    assert result.compliance["product_box"]["source"].startswith("renderer")


def test_it_draws_a_kept_shadow_cleanly_without_the_backdrops_texture(scene: scenes.Scene) -> None:
    render = spec(preset="pinduoduo", format="png", shadow="keep")

    def roughness(texture: float) -> float:
        cut = make_cut(scene.mask, cast_shadow(scene.mask, texture=texture))
        strip = _below_base(decode(finish(scene.rgb, cut, render).data), scene.rgb, cut, render).astype(np.float32)
        assert strip.mean() < 200
        return float(np.abs(np.diff(strip, axis=1)).mean())

    # The input's shadow varies +-60 % pixel to pixel; drawn, it is as smooth as an untextured one.
    assert roughness(0.6) < roughness(0.0) + 0.5


def test_it_fades_a_shadow_that_runs_off_the_photo_before_the_frame(scene: scenes.Scene) -> None:
    # A long cast shadow that covers the whole floor to the photo's right and bottom edges.
    long_shadow = np.zeros(scene.mask.shape, np.float32)
    box = product_box(scene.mask > 0.5)
    assert box is not None
    long_shadow[box.top + box.height // 2:, box.left:] = 0.6
    long_shadow *= 1 - scene.mask
    result = finish(scene.rgb, make_cut(scene.mask, long_shadow), spec(preset="pinduoduo", format="png",
                                                                       shadow="keep", margin=30))
    out = decode(result.data)
    assert (frame(darkest(out), round(0.02 * 480) + 1) == 255).all()
    assert result.compliance is not None and result.compliance["checks"]["frame_white"]["status"] == "passed"


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_it_draws_a_soft_shadow_under_a_product_without_one(scene: scenes.Scene, fmt: str) -> None:
    cut, render = make_cut(scene.mask), spec(preset="pinduoduo", size=480, format=fmt, shadow="soft")
    result = finish(scene.rgb, cut, render)
    out = decode(result.data)
    below = _below_base(out, scene.rgb, cut, render)
    assert below.mean() < 235 and below.min() > 120  # soft: a modest darkening, not a black bar
    assert (frame(darkest(out), 10) == 255).all()
    assert result.compliance is not None and result.compliance["passed"] is True, result.compliance


def test_it_draws_no_shadow_when_asked_to_remove_it(scene: scenes.Scene) -> None:
    cut = make_cut(scene.mask, cast_shadow(scene.mask))
    out = decode(finish(scene.rgb, cut, spec(preset="pinduoduo", format="png")).data)
    box = product_box(darkest(out) < 255)
    assert box is not None
    assert (darkest(out)[box.bottom:] == 255).all()


def test_it_puts_a_transparent_outputs_shadow_in_the_alpha_as_black(scene: scenes.Scene) -> None:
    cut = make_cut(scene.mask, cast_shadow(scene.mask))
    render = spec(preset="pinduoduo", format="png", background="transparent", shadow="soft")
    out = decode(finish(scene.rgb, cut, render).data)
    under = _below_base(out, scene.rgb, cut, render)
    assert (under[..., 3] > 10).all() and (under[..., 3] < 200).all()
    assert (under[..., :3] == 0).all()
    assert (frame(out[..., 3], 10) == 0).all()


def test_it_fails_a_shadow_where_the_preset_forbids_one(scene: scenes.Scene) -> None:
    result = finish(scene.rgb, make_cut(scene.mask), spec(preset="taobao", shadow="soft"))
    assert result.compliance is not None
    assert result.compliance["checks"]["no_shadow"]["status"] == "failed"
    plain = finish(scene.rgb, make_cut(scene.mask), spec(preset="taobao"))
    assert plain.compliance is not None and plain.compliance["checks"]["no_shadow"]["status"] == "passed"


# --- no faint veil ---------------------------------------------------------------------------------------


def _hard_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    dark = scenes.plain(160, 120, colour=(15, 15, 20))  # dark product, ~5x enlargement at 480 px
    light = scenes.plain(160, 120, colour=(200, 200, 196))
    # A model's soft matte: the true edge blurred over ~8 px, as an upsampled 320 px mask is.
    soft = np.clip(cv2.GaussianBlur(light.mask, (0, 0), 3) * 1.15, 0, 1)
    return {"dark_enlarged": (dark.rgb, dark.mask), "light_soft_matte": (light.rgb, soft)}


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("case", ["dark_enlarged", "light_soft_matte"])
def test_it_leaves_no_faint_veil_outside_the_antialiased_edge(case: str, fmt: str) -> None:
    rgb, matte = _hard_cases()[case]
    result = finish(rgb, make_cut(matte), spec(preset="pinduoduo", size=480, format=fmt))
    out = darkest(decode(result.data))
    visible = (out < 250).astype(np.uint8)
    # PNG: off-white only on the 1-2 px rim; JPEG: only inside the edge's own 8 px blocks.
    reach = 2 if fmt == "png" else 8
    near = cv2.dilate(visible, np.ones((2 * reach + 1,) * 2, np.uint8)) > 0
    assert int(np.count_nonzero((out < 255) & ~near)) == 0
    assert result.compliance is not None
    assert result.compliance["checks"]["background_white"]["status"] == "passed"


# --- one product box -------------------------------------------------------------------------------------


def test_it_passes_fill_for_a_white_product_on_white() -> None:
    # A white ball: shaded darker inside, but its outer rim is near-white (251-253).
    side = 200
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    r = np.hypot(yy - side / 2, xx - side / 2) / (0.4 * side)
    matte = np.clip((1.0 - r) * 0.4 * side + 0.5, 0, 1)
    shade = np.where(r < 0.9, 215 + 40 * r, 252)
    rgb = np.clip(np.dstack([shade] * 3) * matte[..., None] + 240 * (1 - matte[..., None]), 0, 255).astype(np.uint8)
    s = spec(preset="amazon", size=1000)
    result = finish(rgb, make_cut(matte), s)
    report = result.compliance
    assert report is not None
    assert report["checks"]["fill"]["status"] == "passed", report["checks"]["fill"]
    assert report["checks"]["fill"]["value"] == pytest.approx(0.86, abs=0.005)
    # Measured from the JPEG's bytes alone, the near-white rim is lost: why the renderer's box is used.
    assert check(result.data, s)["checks"]["fill"]["value"] < report["checks"]["fill"]["value"]


def _white_ball(side: int, rim_px: float) -> tuple[np.ndarray, np.ndarray]:
    """A white ball on a light backdrop: shaded 215-250 inside, its outer ``rim_px`` solid but near-white (252)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    d = np.hypot(yy - side / 2, xx - side / 2)
    radius = 0.4 * side
    matte = np.clip(radius - d + 0.5, 0, 1)
    shade = np.where(d < radius - rim_px, 215 + 35 * d / radius, 252)
    rgb = np.clip(np.dstack([shade] * 3) * matte[..., None] + 235 * (1 - matte[..., None]), 0, 255).astype(np.uint8)
    return rgb, matte


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_a_white_products_near_white_rim_is_product_not_a_veil(fmt: str) -> None:
    # The ball's outer 6 px are solid product at 252: invisible against white, but they are the product,
    # so they count for fill and are not an off-white backdrop.
    rgb, matte = _white_ball(400, rim_px=6)
    s = spec(preset="amazon", size=1000, format=fmt)
    result = finish(rgb, make_cut(matte), s)
    report = result.compliance
    assert report is not None
    assert report["checks"]["background_white"]["status"] == "passed", report["checks"]["background_white"]
    assert report["checks"]["fill"]["value"] == pytest.approx(0.86, abs=0.005)
    assert report["passed"] is True, report
    # From the bytes alone the rim is indistinguishable from an off-white backdrop.
    assert "background_white" in {k for k, v in check(result.data, s)["checks"].items() if v["status"] == "failed"}


def test_a_veil_outside_the_product_still_fails_with_the_renderers_coverage() -> None:
    from generation.engine.compliance import Claim

    rgb, matte = _white_ball(400, rim_px=6)
    s = spec(preset="amazon", size=1000, format="png")
    result = finish(rgb, make_cut(matte), s)
    out = decode(result.data).copy()
    # A faint ring 15 px outside the product, as a leftover soft matte would leave.
    covered = (darkest(out) < 255).astype(np.uint8)
    ring = (cv2.dilate(covered, np.ones((41, 41), np.uint8)) > 0) & ~(cv2.dilate(covered, np.ones((31, 31), np.uint8)) > 0)
    out[ring] = 253
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, "PNG")
    box = product_box(covered)
    assert box is not None
    report = check(buf.getvalue(), s, claim=Claim(box, coverage=covered > 0))
    assert report["checks"]["background_white"]["status"] == "failed"
    assert report["checks"]["background_white"]["value"]["off_white_pixels"] >= np.count_nonzero(ring) * 0.9


def test_it_centres_a_sellers_soft_alpha_png_as_the_checker_measures_it() -> None:
    # A seller's cut-out with a long faint feather on one side only.
    h, w = 160, 200
    alpha = np.zeros((h, w), np.float32)
    alpha[30:130, 50:130] = 1.0
    ramp = np.linspace(0.3, 0.02, 50, dtype=np.float32)
    alpha[30:130, 130:180] = ramp
    rgb = np.full((h, w, 3), (180, 170, 160), np.uint8)
    result = finish(rgb, make_cut(alpha), spec(preset="pinduoduo", format="png"), straight_alpha=True)
    report = result.compliance
    assert report is not None
    assert report["checks"]["centred"]["status"] == "passed", report["checks"]["centred"]
    assert report["passed"] is True, report
    # The box the checker would measure from the bytes alone agrees.
    assert check(result.data, "pinduoduo")["checks"]["centred"]["status"] == "passed"


def test_it_ignores_a_claimed_box_the_pixels_do_not_bear_out(scene: scenes.Scene) -> None:
    from generation.engine.compliance import Claim
    from generation.engine.coverage import Box

    result = finish(scene.rgb, make_cut(scene.mask), spec(preset="pinduoduo", format="png"))
    true_box = product_box(darkest(decode(result.data)) < 255)
    assert true_box is not None
    for wrong in (Box(true_box.left - 20, true_box.top, true_box.right + 20, true_box.bottom),
                  Box(true_box.left + 20, true_box.top + 20, true_box.right - 20, true_box.bottom - 20)):
        report = check(result.data, "pinduoduo", claim=Claim(wrong))
        assert report["product_box"] == {"box": true_box.as_list(), "source": "measured"}


# --- the report ------------------------------------------------------------------------------------------


def test_it_adds_the_cuts_review_to_the_report(scene: scenes.Scene) -> None:
    reason = ReviewReason("touches_frame", "The product touches the photo's edge; part of it may be cut off.")
    result = finish(scene.rgb, make_cut(scene.mask, confidence=0.42, review_reasons=(reason,)), spec(preset="pinduoduo"))
    assert result.compliance is not None
    assert result.compliance["needs_review"] is True and result.needs_review is True
    assert result.compliance["cut_confidence"] == 0.42
    assert result.compliance["review_reasons"] == [{"code": "touches_frame", "message": reason.message}]
    # The file itself still meets the rules: "passed" speaks of the file, not of the cut.
    assert result.compliance["passed"] is True
