"""Upload validation: every rejection, every accepted format, built from bytes in the test."""
from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from generation.engine.upload import CheckedUpload, UploadRejected, check_upload

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000, "min_side": 64}


def photo(width: int = 400, height: int = 300) -> Image.Image:
    """A textured picture: random noise keeps it from compressing like a bomb."""
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def rejection(data: bytes, **limits: int) -> UploadRejected:
    with pytest.raises(UploadRejected) as info:
        check_upload(data, **{**LIMITS, **limits})
    assert info.value.message  # always something to show the user
    return info.value


# --- accepted -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("JPEG", CheckedUpload("jpeg", "image/jpeg", "jpg", 400, 300)),
        ("PNG", CheckedUpload("png", "image/png", "png", 400, 300)),
        ("WEBP", CheckedUpload("webp", "image/webp", "webp", 400, 300)),
        ("HEIF", CheckedUpload("heic", "image/heic", "heic", 400, 300)),
    ],
)
def test_it_accepts_each_supported_format(fmt: str, expected: CheckedUpload) -> None:
    assert check_upload(encode(photo(), fmt), **LIMITS) == expected


def test_it_accepts_a_png_with_transparency() -> None:
    im = photo().convert("RGBA")
    assert check_upload(encode(im, "PNG"), **LIMITS).format == "png"


@pytest.mark.parametrize(("orientation", "size"), [(1, (400, 300)), (3, (400, 300)), (6, (300, 400)), (8, (300, 400))])
def test_it_reports_the_size_after_exif_orientation(orientation: int, size: tuple[int, int]) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    checked = check_upload(encode(photo(), "JPEG", exif=exif), **LIMITS)
    assert (checked.width, checked.height) == size


def test_it_sniffs_the_format_from_the_bytes_alone() -> None:
    # A PNG is a PNG whatever the client called it; there is no filename to trust.
    assert check_upload(encode(photo(), "PNG"), **LIMITS).content_type == "image/png"


def test_it_accepts_exactly_the_limits() -> None:
    data = encode(photo(200, 100), "PNG")
    checked = check_upload(data, max_bytes=len(data), max_pixels=200 * 100, min_side=100)
    assert (checked.width, checked.height) == (200, 100)


# --- rejected -------------------------------------------------------------------


def test_it_rejects_an_empty_file() -> None:
    assert rejection(b"").code == "empty"


def test_it_rejects_a_file_over_the_byte_limit_and_says_the_limit() -> None:
    data = encode(photo(), "PNG")
    err = rejection(data, max_bytes=len(data) - 1)
    assert err.code == "too_large"
    assert "limit" in err.message


def test_it_rejects_a_tiny_image_and_says_the_minimum() -> None:
    err = rejection(encode(photo(10, 10), "PNG"))
    assert err.code == "too_small"
    assert "64" in err.message


def test_it_rejects_too_many_pixels_and_says_the_limit() -> None:
    err = rejection(encode(photo(400, 300), "JPEG"), max_pixels=100_000)
    assert err.code == "too_many_pixels"
    assert "0.1 megapixels" in err.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_it_rejects_a_file_cut_in_half(fmt: str) -> None:
    data = encode(photo(), fmt)
    assert rejection(data[: len(data) // 2]).code == "truncated"


def test_it_rejects_a_jpeg_missing_only_its_last_bytes() -> None:
    data = encode(photo(), "JPEG")
    assert rejection(data[:-200]).code == "truncated"


def test_it_rejects_a_png_with_a_corrupt_chunk() -> None:
    data = bytearray(encode(photo(), "PNG"))
    data[len(data) // 2] ^= 0xFF
    assert rejection(bytes(data)).code == "truncated"


def test_it_refuses_to_run_with_pillows_truncated_images_switch_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError):
        check_upload(encode(photo(), "JPEG"), **LIMITS)


def test_it_rejects_a_bomb_before_decoding_any_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    # 81 MP: under Pillow's own warning threshold, so only our check can catch it.
    err = rejection(png_bomb(9000, 9000))
    assert err.code == "decompression_bomb"
    assert "4.0 megapixels" in err.message


def test_it_rejects_a_bomb_that_pillow_itself_refuses() -> None:
    max_before = Image.MAX_IMAGE_PIXELS
    assert rejection(png_bomb(100_000, 100_000), max_pixels=10**12).code == "decompression_bomb"
    assert Image.MAX_IMAGE_PIXELS == max_before  # the global limit is left alone


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (encode(photo(), "GIF"), "unsupported_format"),
        (encode(photo(), "BMP"), "unsupported_format"),
        (encode(photo(), "TIFF"), "unsupported_format"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="400" height="300"/>', "unsupported_format"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64, "unsupported_format"),
        (b"hello, this is a text file and not a photo\n" * 10, "not_an_image"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not_an_image"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64, "not_an_image"),
    ],
    ids=["gif", "bmp", "tiff", "svg", "avif", "text", "pdf", "mp4"],
)
def test_it_rejects_other_formats(data: bytes, code: str) -> None:
    err = rejection(data)
    assert err.code == code
    assert "JPEG, PNG, WebP or HEIC" in err.message


def test_it_rejects_a_zip_even_when_it_holds_a_jpeg() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("photo.jpg", encode(photo(), "JPEG"))
    assert rejection(buf.getvalue()).code == "not_an_image"


def test_it_rejects_a_jpeg_header_followed_by_garbage() -> None:
    assert rejection(b"\xff\xd8\xff\xe0" + b"garbage" * 100).code == "truncated"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_it_rejects_animated_images(fmt: str) -> None:
    frames = [photo(), photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    err = rejection(data)
    assert err.code == "unsupported_format"
    assert "Animated" in err.message


def test_it_accepts_a_heic_holding_several_stills_by_its_primary_image() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    photo(200, 100).save(buf, "HEIF", save_all=True, append_images=[photo(400, 300)], primary_index=1)
    checked = check_upload(buf.getvalue(), **LIMITS)
    assert (checked.format, checked.width, checked.height) == ("heic", 400, 300)
