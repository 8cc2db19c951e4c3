"""The cut-out on real photos and composites with a known mask: what a seller would notice.

The shipped model costs about a second a call on the CI machine, so each test
makes one or two calls.
"""
from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from generation.engine import ENGINE_VERSION
from generation.engine.base import BackendConfig, EngineError
from generation.engine.cut import Cut, _restore_unlike_pieces, cut_product
from generation.engine.decode import load_rgb_alpha
from generation.engine.review import frame_contact
from generation.engine.local import LocalBackend
from generation.engine.saliency import CLASSICAL, Segmenter, get_segmenter
from generation.engine.segment import border_likeness
from generation.engine.spec import parse_job

from . import scenes


@pytest.fixture(scope="module")
def model() -> Segmenter:
    return get_segmenter("auto")


def iou(cut: Cut, truth: np.ndarray) -> float:
    p, t = cut.matte >= 0.5, truth >= 0.5
    return float((p & t).sum() / max((p | t).sum(), 1))


def _backdrop(texture: np.ndarray, w: int, h: int, tint: tuple[float, float, float]) -> np.ndarray:
    grey = cv2.resize(texture, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return grey[..., None] * np.float32(tint)[None, None, :] / 255.0


def _ball(size: int, colour: tuple[float, float, float], light: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A shaded sphere (paint, antialiased mask): lit from ``light``, its far side dark."""
    s = 4
    yy, xx = np.mgrid[0:size * s, 0:size * s].astype(np.float32)
    r = size * s / 2
    nx, ny = (xx - r) / r, (yy - r) / r
    inside = nx**2 + ny**2 <= 1
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    lx, ly = light
    lz = np.sqrt(max(0.0, 1 - lx * lx - ly * ly))
    shade = np.clip(nx * lx + ny * ly + nz * lz, 0, 1) * 0.9 + 0.06
    paint = cv2.resize(shade, (size, size), interpolation=cv2.INTER_AREA)[..., None] * np.float32(colour)
    mask = cv2.resize(inside.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return paint, mask


def _place(backdrop: np.ndarray, paint: np.ndarray, mask: np.ndarray, x: int, y: int,
           shadow: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Composite with a soft cast shadow below-right of the object; returns (photo, true mask)."""
    h, w = backdrop.shape[:2]
    truth = np.zeros((h, w), np.float32)
    ph, pw = mask.shape
    truth[y:y + ph, x:x + pw] = mask
    out = backdrop.copy()
    if shadow:
        cast = np.zeros_like(truth)
        sh = max(2, ph // 5)
        cv2.ellipse(cast, (x + pw // 2 + pw // 6, y + ph - sh // 3), (int(pw * 0.55), sh), 0, 0, 360, 1.0, -1)
        cast = cv2.GaussianBlur(cast, (0, 0), max(1.0, ph / 25))
        out *= (1 - shadow * cast)[..., None]
    full_paint = np.zeros_like(out)
    full_paint[y:y + ph, x:x + pw] = paint
    out = truth[..., None] * full_paint + (1 - truth[..., None]) * out
    out += np.random.default_rng(seed).normal(0, 2.0, out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), truth


def jpeg(rgb: np.ndarray, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, "JPEG" if mode != "LA" else "PNG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def apple() -> tuple[np.ndarray, np.ndarray]:
    """A red apple lit from the upper left (its lower-right half in deep shade) on grass, with a cast shadow."""
    backdrop = _backdrop(skimage.data.grass(), 900, 700, (190, 215, 150))
    paint, mask = _ball(360, (205, 40, 35), (-0.7, -0.5))
    return _place(backdrop, paint, mask, 270, 150, shadow=0.55, seed=1)


@pytest.fixture(scope="module")
def apple_cut(model: Segmenter, apple: Any) -> Cut:
    return cut_product(apple[0], None, segmenter=model)


def test_it_cuts_a_shaded_apple_on_grass_keeping_its_dark_half(apple: Any, apple_cut: Cut) -> None:
    photo, truth = apple
    cut = apple_cut
    assert cut.segmenter == "u2netp" and cut.model == "u2netp.onnx" and cut.model_sha256
    assert iou(cut, truth) >= 0.95
    # The product's own shade (lower-right quarter of the ball) is product, not shadow.
    dark = np.zeros_like(truth, dtype=bool)
    dark[150 + 220:150 + 340, 270 + 220:270 + 340] = True
    dark &= truth >= 0.99
    assert (cut.matte[dark] >= 0.5).mean() >= 0.98
    assert not cut.needs_review, cut.review_reasons


def test_its_edges_have_no_faint_veil_and_no_stair_steps(apple: Any, apple_cut: Cut) -> None:
    photo, truth = apple
    matte = apple_cut.matte
    assert matte.dtype == np.float32 and matte.shape == truth.shape
    # A few px off the product's edge coverage is exactly zero (no off-white rim on the canvas).
    far = cv2.dilate((truth > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    assert (matte[far] == 0).all()
    # The refined edge follows the photo to about a pixel, not the model's 320 px grid (a ~3 px step here).
    edge = (matte > 0.05) & (matte < 0.95)
    err = np.abs(matte[edge] - truth[edge])
    assert np.median(err) < 0.35
    boundary = np.count_nonzero(cv2.morphologyEx((truth >= 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3))))
    mismatch = np.count_nonzero((matte >= 0.5) != (truth >= 0.5))
    assert mismatch / boundary < 1.0  # on average less than one pixel off along the outline


def test_it_finds_the_cast_shadow_outside_the_product(apple: Any, apple_cut: Cut) -> None:
    photo, truth = apple
    cut = apple_cut
    assert cut.shadow is not None and cut.shadow.shape == truth.shape
    core = cv2.erode((truth >= 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert cut.shadow[cut.matte >= 0.5].max() == 0.0 and cut.shadow[core].max() == 0.0
    ys, xs = np.nonzero(cut.shadow > 0.1)
    assert ys.size > 500
    # It lies on the floor at the product's base, not beside its top.
    assert np.median(ys) > 150 + 0.7 * 360


def test_it_keeps_a_white_ball_on_a_near_white_sweep(model: Segmenter) -> None:
    backdrop = np.full((600, 800, 3), 238.0, np.float32)
    paint, mask = _ball(300, (255, 255, 252), (-0.4, -0.6))
    photo, truth = _place(backdrop, paint, mask, 250, 130, shadow=0.3, seed=2)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.9


def test_it_reads_a_greyscale_photo(model: Segmenter) -> None:
    backdrop = _backdrop(skimage.data.brick(), 800, 600, (255, 255, 255)) * 0.6 + 60
    paint, mask = _ball(280, (250, 250, 250), (-0.5, -0.5))
    photo, truth = _place(backdrop, paint, mask, 260, 150, seed=3)
    rgb, alpha = load_rgb_alpha(jpeg(photo, "L"))
    assert rgb.shape == (600, 800, 3) and alpha is None
    assert iou(cut_product(rgb, alpha, segmenter=model), truth) >= 0.9


def test_a_hint_box_fixes_a_cut_that_picks_the_wrong_object(model: Segmenter) -> None:
    # A big bright ball dominates the frame; the product is the small blue one on the right.
    backdrop = _backdrop(skimage.data.gravel(), 1000, 700, (200, 190, 170))
    big_paint, big_mask = _ball(420, (240, 200, 40), (-0.5, -0.5))
    photo, _ = _place(backdrop, big_paint, big_mask, 60, 140, seed=4)
    small_paint, small_mask = _ball(150, (40, 70, 200), (-0.5, -0.5))
    photo, truth = _place(photo.astype(np.float32), small_paint, small_mask, 760, 420, seed=5)
    plain = cut_product(photo, None, segmenter=model)
    hinted = cut_product(photo, None, hint_box=(730, 390, 940, 600), segmenter=model)
    assert iou(plain, truth) < 0.5
    assert iou(hinted, truth) >= 0.9
    assert (hinted.matte[:, :730] == 0).all() and (hinted.matte[:390] == 0).all()


def _key(length: int, width: int, colour: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A flat key seen from above (paint, antialiased mask): a ring head with a hole and a shaft."""
    s = 4
    m = np.zeros((width * s, length * s), np.float32)
    r, mid = width * s // 2, width * s // 2
    cv2.circle(m, (r, mid), r - 2, 1.0, -1)
    cv2.circle(m, (r, mid), width * s // 6, 0.0, -1)
    cv2.rectangle(m, (r, mid - width * s // 8), (length * s - 2, mid + width * s // 8), 1.0, -1)
    mask = cv2.resize(m, (length, width), interpolation=cv2.INTER_AREA)
    return np.ones((width, length, 3), np.float32) * np.float32(colour), mask


def test_a_small_product_on_a_busy_backdrop_gets_a_closer_look_and_stays_flagged(model: Segmenter) -> None:
    # A key 0.6 % of a brick-wall photo: at 320 px the model sees it a few pixels thick and
    # misses part of it; a second pass on the first cut's box sees it at several times the size.
    backdrop = _backdrop(skimage.data.brick(), 1200, 900, (150, 110, 90))
    paint, mask = _key(150, 44, (190, 195, 205))
    photo, truth = _place(backdrop, paint, mask, 700, 560, seed=2)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.95
    # The first look's doubt (a product this small) still reaches the seller.
    assert cut.needs_review and "tiny_product" in {r.code for r in cut.review_reasons}


def test_it_flags_a_cut_running_off_the_frame_and_not_a_clean_one(model: Segmenter, apple: Any) -> None:
    photo, _ = apple
    cropped = np.ascontiguousarray(photo[:, 400:])  # the apple's left half is off the frame
    cut = cut_product(cropped, None, segmenter=model)
    assert cut.needs_review and "touches_frame" in {r.code for r in cut.review_reasons}
    assert cut.confidence < 0.5


def test_it_refuses_a_photo_with_nothing_in_it(model: Segmenter) -> None:
    flat = np.clip(np.random.default_rng(1).normal(180, 3, (300, 400, 3)), 0, 255).astype(np.uint8)
    with pytest.raises(EngineError) as exc:
        cut_product(flat, None, segmenter=model)
    assert exc.value.code == "no_product_found" and not exc.value.transient


def _unevenly_lit(rgb: np.ndarray, seed: int) -> np.ndarray:
    """A phone photo's light on a flat subject: a ramp across, a vignette, sensor noise."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1 + 0.15 * (xx / w - 0.5) - 0.3 * ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2)
    noise = np.random.default_rng(seed).normal(0, 2, rgb.shape)
    return np.clip(rgb * light[..., None] + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("photo", ["white", "gradient", "grey noise", "grass"])
def test_it_still_refuses_blank_noise_and_plain_texture_photos(model: Segmenter, photo: str) -> None:
    # What the faint-answer steps look at (the model's faint spot, a lone blob of colours the border
    # lacks) must not turn a photo of nothing into a cut.
    rng = np.random.default_rng(3)
    rgb = {
        "white": lambda: np.full((600, 800, 3), 255, np.uint8),
        "gradient": lambda: np.dstack([np.tile(np.linspace(60, 230, 800), (600, 1))] * 3).astype(np.uint8),
        "grey noise": lambda: np.clip(rng.normal(128, 40, (600, 800, 1)), 0, 255).astype(np.uint8).repeat(3, 2),
        "grass": lambda: _unevenly_lit(_backdrop(skimage.data.grass(), 800, 600, (90, 140, 64)), seed=3),
    }[photo]()
    with pytest.raises(EngineError) as exc:
        cut_product(rgb, None, segmenter=model)
    assert exc.value.code == "no_product_found"


def _set_sample(tmp_path: Any, name: str, seed: int, products: str = "known") -> tuple[np.ndarray, np.ndarray]:
    """A composite of the benchmark's evaluation set (bench/quality_set.py, the ``products``
    catalogue): photo and true mask."""
    from bench.quality_set import SourceMissing, build

    try:
        (sample,) = build(tmp_path, seed=seed, names=(name,), products=products)
    except SourceMissing as exc:  # a developer machine without apt access; CI installs the packages
        pytest.skip(f"needs the Debian package {exc.package}: {exc}")
    rgb, _ = load_rgb_alpha(sample.image.read_bytes())
    return rgb, np.asarray(Image.open(sample.mask).convert("L"), np.float32) / 255.0


def test_border_likeness_tells_the_backdrops_colours_from_the_products() -> None:
    scene = scenes.textured()
    like = border_likeness(scene.rgb)
    core = cv2.erode((scene.mask >= 0.99).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    far = cv2.dilate((scene.mask > 0).astype(np.uint8), np.ones((31, 31), np.uint8)) == 0
    assert np.median(like[core]) < 0.2 and np.median(like[far]) > 0.8


def test_a_guitar_on_burnt_bark_is_cut_not_the_bark(model: Segmenter, tmp_path: Any) -> None:
    # The model's first look takes a slab of burnt bark with the guitar's body (IoU 0.14 before the
    # second look at the colours the border lacks); the cut must be the guitar, and stay flagged.
    photo, truth = _set_sample(tmp_path, "guitar-bark", 0)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.75
    codes = {r.code for r in cut.review_reasons}
    assert cut.needs_review and "backdrop_picked" in codes, codes


def test_a_rescued_cut_is_widened_to_the_parts_with_the_backdrops_colours(model: Segmenter, tmp_path: Any) -> None:
    # Seed 5: the colours the bark lacks are the guitar's body, so the second look's view (that blob's
    # box plus a margin) cut off its dark neck (IoU 0.547); looks at the rescued cut's own box, while
    # each still stands out as the rescue did, take the neck in. The flags stay.
    photo, truth = _set_sample(tmp_path, "guitar-bark", 5)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.75
    assert cut.needs_review and "backdrop_picked" in {r.code for r in cut.review_reasons}



def test_a_larger_look_that_runs_off_the_frame_where_the_first_did_not_is_not_taken(model: Segmenter,
                                                                                     tmp_path: Any) -> None:
    # Seed 18: the first cut is the guitar (0.92, flagged for its outline), well clear of the frame;
    # the 448 px look adds a slab of charred bark running off the photo's top and right (0.24).
    photo, truth = _set_sample(tmp_path, "guitar-bark", 18)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.9
    assert frame_contact(cut.matte >= 0.5) < 0.01
    assert cut.needs_review  # the first cut's doubt stands

def test_a_see_through_glass_is_not_traded_for_a_part_of_it(model: Segmenter, tmp_path: Any) -> None:
    # A glass shows the table through it, so its cut has the backdrop's colours; colour cannot judge
    # it, and the cut stays the model's (IoU 0.915; a colour-driven second look would keep 0.30).
    photo, truth = _set_sample(tmp_path, "glass-wood", 0)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.85
    assert "backdrop_picked" not in {r.code for r in cut.review_reasons}


def test_a_doubted_cut_is_looked_at_again_with_the_model_at_a_larger_input(model: Segmenter, tmp_path: Any) -> None:
    # A glass on wood (seed 2): at the model's 320 px its cut keeps 58 % of the glass and is flagged;
    # with the model at 448 px it is whole. The flag stays: a second view is not a reason to trust it.
    photo, truth = _set_sample(tmp_path, "glass-wood", 2)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.9
    assert cut.needs_review and cut.confidence < 0.5


@pytest.mark.parametrize(("name", "seed", "before"), [("thermometer-fabric", 0, 0.929), ("glass-wood", 1, 0.850)])
def test_a_product_well_inside_the_frame_is_seen_again_at_its_own_box(
        model: Segmenter, tmp_path: Any, name: str, seed: int, before: float) -> None:
    # A thin thermometer on fabric, a glass on wood: cut without doubt but seen by the model a few
    # dozen of its 320 px across. The pass on the first cut's box (the model at full 320 px on the
    # product) lifts them (IoU before this pass: ``before``).
    photo, truth = _set_sample(tmp_path, name, seed)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.94 > before


def test_a_stem_the_second_look_drops_is_put_back(model: Segmenter, tmp_path: Any) -> None:
    # A strawberry on brown fabric (seed 16): the whole-photo look cuts berry and stem (IoU 0.965);
    # the look at its own box keeps the berry and drops most of the thin green stem (0.945). The
    # stem's colours are not the fabric's, so it is put back.
    photo, truth = _set_sample(tmp_path, "strawberry-fabric", 16)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.96
    stem = truth > 0.5
    stem[np.argmax(stem.any(axis=1)) + round(0.4 * np.count_nonzero(stem.any(axis=1))):] = False  # the top 40 %
    assert np.count_nonzero((cut.matte >= 0.5) & stem) >= 0.9 * np.count_nonzero(stem)


def _looks_of(photo: np.ndarray, first: np.ndarray, second: np.ndarray, shadow: np.ndarray | None = None) -> Cut:
    def cut(mask: np.ndarray, shade: np.ndarray | None) -> Cut:
        return Cut(matte=mask.astype(np.float32), shadow=shade, confidence=1.0, review_reasons=(),
                   segmenter="u2netp", model=None, model_sha256=None)

    return _restore_unlike_pieces(photo, cut(first, None), cut(second, shadow), photo)


def test_only_attached_pieces_in_colours_the_border_lacks_are_put_back() -> None:
    rng = np.random.default_rng(0)
    photo = np.clip(rng.normal((120, 90, 60), 12, (300, 400, 3)), 0, 255).astype(np.uint8)  # brown fabric
    yy, xx = np.mgrid[:300, :400]
    berry = (yy - 190) ** 2 + (xx - 200) ** 2 <= 60 ** 2
    stem = (abs(xx - 200) <= 4) & (yy >= 90) & (yy < 135)  # joins the berry's top
    lost = (abs(xx - 330) <= 8) & (yy >= 60) & (yy < 90)  # a piece away from the berry
    fabric = (abs(xx - 150) <= 8) & (yy >= 95) & (yy < 135)  # a piece of fabric by the berry
    photo[berry] = (200, 30, 40)
    photo[stem | lost] = (60, 160, 50)
    second = berry.copy()
    back = _looks_of(photo, berry | stem | lost | fabric, second).matte >= 0.5
    assert back[stem].all() and not back[lost].any() and not back[fabric].any() and back[berry].all()
    # The same stem under the cast shadow the second look found is the shadow, not the product.
    shadow = np.zeros((300, 400), np.float32)
    shadow[stem] = 0.5
    assert not (_looks_of(photo, berry | stem, second, shadow).matte >= 0.5)[stem & ~berry].any()


def test_a_4000x120_strip_is_seen_wider_than_the_models_square(model: Segmenter, tmp_path: Any) -> None:
    # Squashed to 320x320 the strip is 10 model px across and the model sees nothing it can cut
    # (IoU 0.000 before); mirrored out to 4:1 it sees the syringe 38 px across (0.754 in engine 2.1;
    # 0.674 since the flagged cut is taken from the model at 448 px, also mirrored). It stays flagged.
    photo, truth = _set_sample(tmp_path, "strip-syringe", 2)
    assert photo.shape[:2] == (120, 4000)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.65
    assert cut.needs_review


def test_a_tiny_key_the_model_barely_sees_is_cut_and_flagged_not_refused(model: Segmenter, tmp_path: Any) -> None:
    # A key 0.2 % of a burlap photo: the model's raw answer spans 0.01 (nothing salient) but points
    # at the key; it used to be refused as no_product_found.
    photo, truth = _set_sample(tmp_path, "key-fabric", 2)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.4
    assert cut.needs_review and "faint_product" in {r.code for r in cut.review_reasons}


def test_a_tiny_key_the_model_does_not_point_at_is_found_by_its_colours(model: Segmenter, tmp_path: Any) -> None:
    # A key 0.07 % of a burlap photo (seed 5): the model's raw answer spans 0.02 and its faint spot is
    # a knot of the weave, so the spot's look finds nothing; the key is the one blob of colours the
    # burlap lacks. It used to be refused as no_product_found.
    photo, truth = _set_sample(tmp_path, "key-fabric", 5)
    cut = cut_product(photo, None, segmenter=model)
    assert iou(cut, truth) >= 0.8
    assert cut.needs_review and "faint_product" in {r.code for r in cut.review_reasons}


@pytest.mark.parametrize("size", [(4000, 120), (2000, 100), (64, 2000)])
def test_classical_cuts_thin_strips_without_crashing(size: tuple[int, int]) -> None:
    w, h = size
    rgb = np.full((h, w, 3), (205, 195, 175), np.uint8)
    cv2.ellipse(rgb, (w // 2, h // 2), (max(4, w // 8), max(4, h // 8)) if w > h else (w // 4, h // 8),
                0, 0, 360, (30, 60, 160), -1)
    cut = cut_product(rgb, None, segmenter=CLASSICAL)
    assert cut.matte.shape == (h, w) and (cut.matte > 0.5).any()


def test_the_backend_renders_the_coffee_photo_with_its_provenance() -> None:
    buf = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(buf, "JPEG", quality=92)
    result = LocalBackend(BackendConfig()).generate(buf.getvalue(), parse_job({"format": "png"}), lambda pct: None)
    assert result.compliance["passed"], result.compliance
    assert result.engine == {"backend": "local", "segmenter": "u2netp", "model": "u2netp.onnx",
                             "model_sha256": get_segmenter("auto").model_sha256, "version": ENGINE_VERSION}
    mask = np.asarray(Image.open(io.BytesIO(result.mask)))
    assert mask.shape == (400, 600) and mask.dtype == np.uint8
    assert mask[200, 300] == 255 and mask[5, 5] == 0


def test_a_kiwi_on_wood_passes_background_white_in_jpeg(tmp_path: Any) -> None:
    # The kiwi's faint outer edge (drawn, partly covered) sits in JPEG blocks of its own, which the
    # encoder lightens past the "visibly dark" level: from the bytes alone those blocks looked like
    # backdrop and 6 px 1-5 levels off failed background_white at every quality. The renderer's
    # coverage says they are the product's edge.
    photo, _ = _set_sample(tmp_path, "kiwi-wood", 0)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    result = LocalBackend(BackendConfig()).generate(buf.getvalue(), parse_job({}), lambda pct: None)
    check = result.compliance["checks"]["background_white"]
    assert check["status"] == "passed", check
    assert check["value"]["edge_block_max_deviation"] <= 5


def test_the_backend_turns_a_4000x120_strip_into_a_result() -> None:
    rgb = np.full((120, 4000, 3), (205, 195, 175), np.uint8)
    cv2.ellipse(rgb, (2000, 60), (500, 40), 0, 0, 360, (30, 60, 160), -1)
    backend = LocalBackend(BackendConfig())
    result = backend.generate(jpeg(rgb), parse_job({}), lambda pct: None)
    assert result.data and result.mask is not None
    mask = np.asarray(Image.open(io.BytesIO(result.mask)))
    assert mask.shape == (120, 4000) and mask[60, 2000] == 255 and mask[60, 100] == 0
    assert result.engine["segmenter"] == "u2netp" and result.engine["version"]
