"""The offline engine end to end: decode, segment, compose, encode, with the compliance report."""
from __future__ import annotations

import io
import struct
from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageCms

from generation.engine import load_backend
from generation.engine.base import BackendConfig, EngineError, GenerationResult
from generation.engine.cut import cut_product
from generation.engine.saliency import get_segmenter
from generation.engine.compose import ink_layers, normalise_matte, render_canvas
from generation.engine.decode import load_rgb_alpha
from generation.engine.local import LocalBackend
from generation.engine.noop import NoopBackend
from generation.engine.presets import PRESETS
from generation.engine.spec import parse_job
from generation.engine.segment import segment_product

from . import scenes

FINDABLE = [name for name, make in scenes.ALL.items() if make().findable]
NOT_FINDABLE = [name for name, make in scenes.ALL.items() if not make().findable]


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    # Rendering, encoding and progress do not depend on which segmenter cut the
    # product; the classical one is ~10x cheaper than the model. The model's own
    # cuts are tested in test_engine_cut.py.
    return LocalBackend(BackendConfig(segmenter="classical"))


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def decoded(result: GenerationResult) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB"))


def generate(backend: LocalBackend, data: bytes, options: dict[str, Any] | None = None) -> GenerationResult:
    return backend.generate(data, parse_job(options), lambda pct: None)


def assert_white_frame(out: np.ndarray) -> None:
    border = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
    assert (border == 255).all()


# --- segmentation on synthetic scenes with a known mask ---------------------------------------


@pytest.mark.parametrize("name", FINDABLE)
def test_it_finds_the_product_with_iou_of_at_least_095(name: str) -> None:
    scene = scenes.ALL[name]()
    rgb, alpha = load_rgb_alpha(scene.encode())
    matte = segment_product(rgb, alpha)
    assert matte.dtype == np.float32 and matte.shape == scene.mask.shape
    assert 0.0 <= matte.min() and matte.max() <= 1.0
    assert scenes.iou(matte, scene.mask) >= 0.95


@pytest.mark.parametrize("name", NOT_FINDABLE)
def test_it_refuses_a_product_it_cannot_find_with_advice(name: str) -> None:
    scene = scenes.ALL[name]()
    with pytest.raises(EngineError) as exc:
        segment_product(scene.rgb)
    assert exc.value.code == "no_product_found"
    assert exc.value.transient is False
    assert "Upload a photo where the whole product is inside the frame" in exc.value.message


def test_it_says_the_product_is_cut_off_when_it_runs_off_the_frame() -> None:
    with pytest.raises(EngineError, match="cut off by the edge"):
        segment_product(scenes.touching_frame().rgb)


def test_it_keeps_the_hole_of_a_ring_handle_as_background() -> None:
    scene = scenes.plain()
    matte = segment_product(scene.rgb)
    hole = scene.mask < 0.01
    # The hole is enclosed by the handle: only pixels not reachable from the frame.
    count, labels = cv2.connectedComponents(hole.astype(np.uint8), connectivity=4)
    frame_labels = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    enclosed = np.isin(labels, [i for i in range(1, count) if i not in frame_labels])
    assert enclosed.sum() > 1000
    assert (matte[enclosed] < 0.5).mean() > 0.98


def test_it_uses_a_transparent_pngs_own_alpha() -> None:
    scene = scenes.transparent()
    rgb, alpha = load_rgb_alpha(scene.encode())
    assert alpha is not None
    np.testing.assert_array_equal(segment_product(rgb, alpha), alpha.astype(np.float32) / 255)


def test_it_refuses_an_all_transparent_png() -> None:
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgb, alpha = load_rgb_alpha(png(rgba))
    with pytest.raises(EngineError, match="transparent") as exc:
        segment_product(rgb, alpha)
    assert exc.value.code == "no_product_found"


# --- decoding ------------------------------------------------------------------------------------


def test_it_applies_the_exif_orientation(backend: LocalBackend) -> None:
    upright = scenes.plain(480, 640).rgb  # a portrait photo...
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # ...stored landscape (counter-clockwise)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    rgb, _ = load_rgb_alpha(buf.getvalue())
    assert rgb.shape == upright.shape
    assert np.abs(rgb.astype(int) - upright.astype(int)).mean() < 3


def test_it_converts_cmyk_and_palette_inputs_to_rgb() -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, :16] = (200, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=95)
    out, alpha = load_rgb_alpha(buf.getvalue())
    assert alpha is None and out.shape == (32, 32, 3)
    assert np.abs(out[5, 5].astype(int) - (200, 30, 30)).max() <= 6

    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 20])  # the black half is transparent
    buf = io.BytesIO()
    palette.save(buf, "PNG", transparency=palette.info["transparency"])
    out, alpha = load_rgb_alpha(buf.getvalue())
    assert alpha is not None and alpha[0, 0] == 255 and alpha[0, 20] == 0


def linear_rgb_icc() -> bytes:
    """A minimal ICC v2 display profile: sRGB primaries, but a linear (gamma 1.0) tone curve."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    text = b"Linear sRGB test\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 0x0100) + bytes(2)
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)), (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
            (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, payload in tags:
        payload += bytes(-len(payload) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(payload))
        data += payload
    size = offset + len(data)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + bytes(12) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8 + 4) + s15(0.9642) + s15(1.0) + s15(0.8249)
              + bytes(4 + 44))
    return header + struct.pack(">I", len(tags)) + table + data


def test_it_converts_through_an_embedded_icc_profile() -> None:
    rgb = np.full((16, 16, 3), 60, np.uint8)

    def tagged(icc: bytes) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "PNG", icc_profile=icc)
        return load_rgb_alpha(buf.getvalue())[0][8, 8].astype(int)

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert np.abs(tagged(srgb) - 60).max() <= 1
    # 60/255 of linear light is sRGB ~136: the profile was applied, not ignored.
    assert np.abs(tagged(linear_rgb_icc()) - 136).max() <= 3


def test_it_ignores_an_alpha_channel_that_is_fully_opaque() -> None:
    rgba = np.full((50, 50, 4), 255, np.uint8)
    assert load_rgb_alpha(png(rgba))[1] is None


def test_it_refuses_undecodable_bytes() -> None:
    with pytest.raises(EngineError) as exc:
        load_rgb_alpha(b"definitely not an image")
    assert exc.value.code == "invalid_image" and exc.value.transient is False


# --- composition ---------------------------------------------------------------------------------


def test_it_removes_the_backdrops_colour_from_edge_pixels() -> None:
    """A half-covered pixel of red product on green paper must come out red-on-white, not green-tinted."""
    product, paper = np.float32([200, 30, 30]), np.float32([30, 200, 30])
    alpha = np.zeros((40, 40), np.float32)
    alpha[10:30, 10:30] = 1.0
    alpha[10:30, 9] = 0.5  # an antialiased left edge
    alpha[10:30, 30] = 0.25  # and right edge
    photo = alpha[..., None] * product + (1 - alpha[..., None]) * paper
    layers = ink_layers(np.round(photo).astype(np.uint8), alpha, straight_alpha=False)
    out = 255 - layers[..., :3].astype(np.float32)
    for col, a in ((9, 0.5), (30, 0.25)):
        expected = a * product + (1 - a) * 255
        assert np.abs(out[20, col] - expected).max() <= 1.0


def test_it_composites_straight_alpha_as_the_files_own_colour() -> None:
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[:] = (30, 140, 60)
    matte = np.full((4, 4), 0.5, np.float32)
    layers = ink_layers(colour, matte, straight_alpha=True)
    expected = 0.5 * np.float32([30, 140, 60]) + 127.5
    np.testing.assert_allclose(255 - layers[0, 0, :3].astype(np.float32), expected, atol=0.5)
    assert layers[0, 0, 3] == 128  # coverage byte: round(0.5 * 255)


def test_it_never_repaints_the_products_own_pixels() -> None:
    scene = scenes.plain(1200, 1000)
    matte = normalise_matte(segment_product(scene.rgb))
    rows, cols = np.flatnonzero((matte > 0).any(axis=1)), np.flatnonzero((matte > 0).any(axis=0))
    long_side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    size = 1000
    # A margin that makes the product exactly its own size on the canvas: no resampling.
    opts = parse_job({"size": size, "margin": (1 - long_side / size) * 100, "format": "png"}).outputs[0]
    out = render_canvas(scene.rgb, matte, opts)
    y0 = (size - (rows[-1] - rows[0] + 1)) // 2 - rows[0]
    x0 = (size - (cols[-1] - cols[0] + 1)) // 2 - cols[0]
    solid = np.argwhere(matte == 1.0)
    assert len(solid) > 100_000
    np.testing.assert_array_equal(out[solid[:, 0] + y0, solid[:, 1] + x0], scene.rgb[solid[:, 0], solid[:, 1]])


# --- the backend ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FINDABLE)
def test_it_renders_a_compliant_white_square_from_every_findable_scene(backend: LocalBackend, name: str) -> None:
    result = generate(backend, scenes.ALL[name]().encode(), {"size": 1000})
    out = decoded(result)
    assert (result.width, result.height) == (1000, 1000) == out.shape[:2][::-1]
    assert result.content_type == "image/jpeg" and result.extension == "jpg"
    assert_white_frame(out)
    assert result.compliance is not None and result.compliance["passed"], result.compliance


def test_it_normalises_an_empty_options_dict_itself(backend: LocalBackend) -> None:
    result = generate(backend, scenes.gradient().encode())
    assert result.width == 2000 and result.compliance["preset"] == "amazon"


def test_it_reports_progress_in_increasing_steps(backend: LocalBackend) -> None:
    seen: list[int] = []
    backend.generate(scenes.shadowed().encode(), parse_job({"size": 1000}), seen.append)
    assert seen == [10, 40, 70, 90, 100]


class Canceled(Exception):
    pass


@pytest.mark.parametrize("at", [10, 40, 70, 90, 100])
def test_it_lets_an_exception_from_progress_propagate(backend: LocalBackend, at: int) -> None:
    seen: list[int] = []

    def progress(pct: int) -> None:
        seen.append(pct)
        if pct == at:
            raise Canceled

    with pytest.raises(Canceled):
        backend.generate(scenes.shadowed().encode(), parse_job({"size": 1000}), progress)
    assert seen[-1] == at


def test_a_failure_of_the_mask_made_beside_the_render_fails_the_generation(
        backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stored mask is encoded on a side thread while the output is rendered: its error must reach
    # the caller (and so the task), not vanish with the thread.
    def broken(matte: np.ndarray) -> bytes:
        raise MemoryError("no room for the mask")

    monkeypatch.setattr("generation.engine.local.encode_mask", broken)
    with pytest.raises(MemoryError, match="no room for the mask"):
        generate(backend, scenes.shadowed().encode(), {"size": 1000})


def test_it_fails_fast_with_no_product_found_through_the_backend(backend: LocalBackend) -> None:
    seen: list[int] = []
    with pytest.raises(EngineError) as exc:
        backend.generate(scenes.low_contrast().encode(), parse_job({}), seen.append)
    assert exc.value.code == "no_product_found"
    assert seen == [10]


def _photo(name: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(getattr(skimage.data, name)()).save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_it_turns_the_coffee_photo_into_a_compliant_image_for_every_preset(backend: LocalBackend, preset: str) -> None:
    size = max(PRESETS[preset].min_size, 800)
    result = generate(backend, _photo("coffee"), {"preset": preset, "size": size})
    out = decoded(result)
    width, height = PRESETS[preset].canvas(size)  # size is the long side (Zalando is portrait)
    assert out.shape == (height, width, 3)
    assert result.compliance["passed"], result.compliance
    if not PRESETS[preset].may_touch_edge:
        assert_white_frame(out)


def test_it_keeps_the_espresso_of_the_coffee_photo(backend: LocalBackend) -> None:
    """The crema (orange-brown, inside the cup) survives as product, in its own colour and extent."""
    data = _photo("coffee")
    photo, _ = load_rgb_alpha(data)
    crema = photo[120:170, 240:330].reshape(-1, 3).mean(axis=0)

    def crema_pixels(img: np.ndarray) -> int:
        return int((np.abs(img.reshape(-1, 3).astype(int) - crema).max(axis=1) <= 12).sum())

    matte = segment_product(photo)
    rows, cols = np.flatnonzero((matte > 0.5).any(axis=1)), np.flatnonzero((matte > 0.5).any(axis=0))
    out = decoded(generate(backend, data, {"size": 1000, "format": "png"}))
    product = (out < 250).any(axis=2)
    out_rows, out_cols = np.flatnonzero(product.any(axis=1)), np.flatnonzero(product.any(axis=0))
    scale = max(np.ptp(out_rows), np.ptp(out_cols)) / max(np.ptp(rows), np.ptp(cols))
    assert crema_pixels(out) / (crema_pixels(photo) * scale**2) == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize("name", ["rocket", "chelsea"])
def test_it_cuts_but_flags_photos_that_are_not_product_shots(name: str) -> None:
    # The rocket is a sliver in a busy scene; the cat's face runs off the frame.
    # Refusing would be wrong for a real product shot that looks like this, so
    # the cut is made and a person is asked to look.
    photo, _ = load_rgb_alpha(_photo(name))
    cut = cut_product(photo, None, segmenter=get_segmenter("auto"))
    assert cut.needs_review and cut.confidence < 0.5
    assert cut.review_reasons and all(r.message.endswith(".") for r in cut.review_reasons)


def test_it_writes_png_and_webp_with_exact_white(backend: LocalBackend) -> None:
    data = scenes.textured().encode()
    for options, content_type in (({"format": "png"}, "image/png"),
                                  ({"preset": "shopify", "size": 1000, "format": "webp"}, "image/webp")):
        result = generate(backend, data, {"size": 1000, **options})
        assert result.content_type == content_type
        assert result.compliance["passed"], result.compliance
        assert result.compliance["checks"]["background_white"]["value"]["edge_block_off_white_pixels"] == 0


def test_it_keeps_taobao_between_38_and_300_kb(backend: LocalBackend) -> None:
    result = generate(backend, scenes.plain().encode(), {"preset": "taobao"})
    assert 38_000 <= len(result.data) <= 300_000
    assert result.compliance["checks"]["bytes"]["passed"]


def test_it_is_loadable_by_name() -> None:
    assert isinstance(load_backend("local", BackendConfig()), LocalBackend)
    assert load_backend("local", BackendConfig()).name == "local"


def test_the_noop_backend_returns_a_white_jpeg_at_once() -> None:
    seen: list[int] = []
    result = NoopBackend(BackendConfig()).generate(b"ignored", parse_job({}), seen.append)
    assert seen == [100] and result.content_type == "image/jpeg"
    im = Image.open(io.BytesIO(result.data))
    assert im.format == "JPEG" and im.size == (result.width, result.height)
    assert (np.asarray(im.convert("RGB")) >= 254).all()


def test_several_outputs_share_one_cut_and_each_gets_its_own_shadow_file_and_report(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import generation.engine.local as local

    cuts = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        cuts.append(1)
        return cut_product(*args, **kwargs)

    # A counting wrapper around the real cut: the point is how often it runs.
    monkeypatch.setattr(local, "cut_product", counted)
    job = parse_job({"outputs": '[{"preset": "shopify", "size": 800, "format": "png"}, {"preset": "shopify", '
                                '"size": 800, "format": "png", "shadow": "soft", "name": "soft"}, '
                                '{"preset": "taobao", "name": "tb"}]'})
    progress: list[int] = []
    result = backend.generate(png(scenes.plain().rgb), job, progress.append)
    assert len(cuts) == 1
    assert [(o.name, o.format) for o in result.outputs] == [("shopify", "png"), ("soft", "png"), ("tb", "jpeg")]
    plain, soft = (np.asarray(Image.open(io.BytesIO(o.data)).convert("RGB")).astype(int) for o in result.outputs[:2])
    # The same cut-out on the same canvas; only the soft output adds a shadow, which only darkens,
    # and lies under the product's base.
    darker = plain - soft
    assert darker.min() >= 0 and np.count_nonzero(darker) > 1000
    rows = np.nonzero(darker.max(axis=(1, 2)))[0]
    product_rows = np.nonzero((plain < 250).any(axis=(1, 2)))[0]
    assert rows.min() > (product_rows.min() + product_rows.max()) / 2
    assert result.outputs[2].compliance["checks"]["no_shadow"]["status"] == "passed"
    assert progress == sorted(progress) and progress[0] == 10 and progress[-1] == 100
