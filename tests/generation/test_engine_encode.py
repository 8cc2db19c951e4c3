"""The encoder's JPEG ladder (generation.engine.encode): the written bytes are checked, and a byte
limit is met losslessly first, then by a lower quality."""
from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generation.engine import encode, presets
from generation.engine.compliance import estimate_jpeg_quality
from generation.engine.spec import RenderSpec
from generation.engine.spec import parse_render


def photo_on_white(spec: RenderSpec) -> np.ndarray:
    """A textured product on white on ``spec``'s canvas: enough detail for Huffman optimisation to matter."""
    rng = np.random.default_rng(7)
    width, height = spec.canvas
    pixels = np.full((height, width, 3), 255, np.uint8)
    ys, xs = slice(height // 5, height - height // 5), slice(width // 5, width - width // 5)
    yy, xx = np.mgrid[ys, xs]
    texture = 90 + 60 * np.sin(xx / 7.0)[..., None] + rng.integers(0, 40, (*yy.shape, 3))
    pixels[ys, xs] = np.clip(texture, 0, 255).astype(np.uint8)
    return pixels


def quality_of(data: bytes) -> int:
    return estimate_jpeg_quality(Image.open(io.BytesIO(data)).quantization[0])


def sizes(pixels: np.ndarray, quality: int) -> tuple[int, int]:
    im = Image.fromarray(pixels)
    return len(encode.encode_jpeg(im, quality)), len(encode.encode_jpeg(im, quality, optimize=True))


def with_limit(monkeypatch: Any, name: str, max_bytes: int) -> None:
    monkeypatch.setitem(presets.PRESETS, name, dataclasses.replace(presets.PRESETS[name], max_bytes=max_bytes))


SPEC = {"preset": "amazon", "size": 1000}


def test_optimised_tables_are_lossless_and_smaller() -> None:
    pixels = photo_on_white(parse_render(SPEC))
    im = Image.fromarray(pixels)
    plain, optimised = encode.encode_jpeg(im, 95), encode.encode_jpeg(im, 95, optimize=True)
    assert len(optimised) < len(plain)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(plain))), np.asarray(Image.open(io.BytesIO(optimised))))


def test_a_file_just_over_the_limit_keeps_its_quality_with_optimised_tables(monkeypatch: Any) -> None:
    spec = parse_render(SPEC)
    pixels = photo_on_white(spec)
    quality = spec.preset_def.jpeg_quality
    plain, optimised = sizes(pixels, quality)
    with_limit(monkeypatch, "amazon", (plain + optimised) // 2)
    data, report = encode.encode_image(pixels, spec)
    assert report["checks"]["bytes"]["passed"]
    assert len(data) == optimised
    assert quality_of(data) == quality


def test_a_file_far_over_the_limit_steps_down_the_quality(monkeypatch: Any) -> None:
    spec = parse_render(SPEC)
    pixels = photo_on_white(spec)
    quality = spec.preset_def.jpeg_quality
    _, optimised = sizes(pixels, quality)
    with_limit(monkeypatch, "amazon", int(optimised * 0.8))
    data, report = encode.encode_image(pixels, spec)
    assert report["checks"]["bytes"]["passed"]
    assert quality_of(data) < quality


@pytest.mark.parametrize("preset", ["amazon", "shopify"])
def test_without_a_limit_in_reach_the_file_is_encoded_once_without_optimising(preset: str, monkeypatch: Any) -> None:
    calls: list[bool] = []
    real = encode.encode_jpeg
    monkeypatch.setattr(encode, "encode_jpeg", lambda im, q, optimize=False: calls.append(optimize) or real(im, q, optimize))
    spec = parse_render({"preset": preset, "size": 1000})
    data, report = encode.encode_image(photo_on_white(spec), spec)
    assert report["checks"]["bytes"]["passed"] and report["checks"]["background_white"]["passed"]
    assert calls == [False]
