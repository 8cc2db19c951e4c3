"""Validation of an uploaded product photo, from its bytes alone.

The filename and the client's content type are never consulted: the format is
sniffed from the magic bytes, then the file is opened by that one Pillow plugin
only, its declared dimensions are checked *before* any pixel data is decoded
(so a decompression bomb costs a header read, not gigabytes), and finally the
whole image is decoded once to prove it is complete.

Choices worth knowing:

* Animated PNG/WebP files are rejected (``unsupported_format``): the worker
  would only ever use the first frame, which may not be the one the seller saw
  in their viewer. A HEIC holding several still images (a burst, an edited
  copy) is accepted and its *primary* image is used, as every viewer shows it.
* ``decompression_bomb`` vs ``too_many_pixels``: both mean "too many pixels",
  but a file whose declared pixels are implausible for its size (an expansion
  above :data:`BOMB_EXPANSION_RATIO`, beyond what DEFLATE can produce) or that
  Pillow itself refuses as a bomb is reported as a bomb.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

from .heif import enable_heif

logger = logging.getLogger(__name__)

#: Decoded RGB bytes per file byte above which a file is called a bomb. DEFLATE
#: tops out near 1032:1, so a real PNG cannot exceed it.
BOMB_EXPANSION_RATIO = 1024

_EXIF_ORIENTATION = 0x0112

# format -> (Pillow plugin name, content type, extension, name shown to users)
_FORMATS: dict[str, tuple[str, str, str, str]] = {
    "jpeg": ("JPEG", "image/jpeg", "jpg", "JPEG"),
    "png": ("PNG", "image/png", "png", "PNG"),
    "webp": ("WEBP", "image/webp", "webp", "WebP"),
    "heic": ("HEIF", "image/heic", "heic", "HEIC"),
}
_ACCEPTED = "JPEG, PNG, WebP or HEIC"

# ISO-BMFF brands of HEVC-coded HEIF files; AVIF shares the container but not the codec.
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_GENERIC_HEIF_BRANDS = {b"mif1", b"msf1", b"mif2", b"miaf"}
_AVIF_BRANDS = {b"avif", b"avis"}


@dataclass(frozen=True)
class CheckedUpload:
    format: str  # "jpeg" | "png" | "webp" | "heic"
    content_type: str  # "image/jpeg" ...
    extension: str  # "jpg" | "png" | "webp" | "heic"
    width: int  # after EXIF orientation
    height: int


class UploadRejected(ValueError):
    """The upload is not an acceptable product photo; ``message`` is for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _iso_bmff_brands(data: bytes) -> set[bytes]:
    """Major and compatible brands of the leading ``ftyp`` box (empty if none)."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return set()
    box_size = int.from_bytes(data[0:4], "big")
    end = min(box_size if box_size >= 16 else 16, len(data), 4096)
    brands = {data[8:12]}
    brands.update(data[i : i + 4] for i in range(16, end - 3, 4))
    return brands


def sniff_format(data: bytes) -> str:
    """One of :data:`_FORMATS`' keys, or raise :class:`UploadRejected`."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    brands = _iso_bmff_brands(data)
    if brands & _HEIC_BRANDS or (brands & _GENERIC_HEIF_BRANDS and not brands & _AVIF_BRANDS):
        return "heic"
    other = _known_other_image(data, brands)
    if other:
        raise UploadRejected(
            "unsupported_format", f"{other} images are not supported: upload a {_ACCEPTED} photo."
        )
    raise UploadRejected(
        "not_an_image", f"The file is not an image: upload a {_ACCEPTED} photo."
    )


def _known_other_image(data: bytes, brands: set[bytes]) -> str | None:
    """The name of a recognised but unsupported image format, for a precise message."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if data[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or data[:4] == b"\xff\x4f\xff\x51":
        return "JPEG 2000"
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


def _mp(n: int) -> str:
    return f"{n / 1_000_000:.1f} megapixels"


def _check_dimensions(
    width: int, height: int, data_len: int, *, max_pixels: int, min_side: int
) -> None:
    pixels = width * height
    if pixels > max_pixels:
        if pixels * 3 > data_len * BOMB_EXPANSION_RATIO:
            raise UploadRejected(
                "decompression_bomb",
                f"The file declares {width} x {height} pixels ({_mp(pixels)}) in only "
                f"{data_len} bytes, which is not a real photo; the limit is {_mp(max_pixels)}.",
            )
        raise UploadRejected(
            "too_many_pixels",
            f"The image is {width} x {height} pixels ({_mp(pixels)}); "
            f"the limit is {_mp(max_pixels)}. Resize it and upload again.",
        )
    if min(width, height) < min_side:
        raise UploadRejected(
            "too_small",
            f"The image is {width} x {height} pixels; each side must be at least {min_side} pixels.",
        )


def check_upload(data: bytes, *, max_bytes: int, max_pixels: int, min_side: int) -> CheckedUpload:
    """Validate an upload and describe it, or raise :class:`UploadRejected`.

    ``width``/``height`` are as displayed, i.e. after the EXIF orientation
    (values 5-8 are quarter turns, which swap the sides).
    """
    if not data:
        raise UploadRejected("empty", "The file is empty.")
    if len(data) > max_bytes:
        raise UploadRejected(
            "too_large", f"The file is {_mb(len(data))}; the limit is {_mb(max_bytes)}."
        )
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A process-wide Pillow switch: with it on, a photo cut in half decodes
        # "successfully" with a grey lower half. Refuse loudly rather than
        # accept broken uploads quietly.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on; uploads cannot be validated")

    fmt = sniff_format(data)
    plugin, content_type, extension, shown = _FORMATS[fmt]
    if fmt == "heic":
        enable_heif()

    damaged = UploadRejected(
        "truncated", f"The {shown} file is damaged or incomplete: upload the original file again."
    )
    try:
        # formats=[plugin]: only the sniffed plugin may parse the bytes, so a
        # polyglot cannot be routed to another decoder.
        im = Image.open(io.BytesIO(data), formats=[plugin])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own global limit (the warning only raises if the process
        # turned warnings into errors); our limit is normally far lower and is
        # checked below, but the declared size already proves the point.
        raise UploadRejected(
            "decompression_bomb",
            f"The file declares far more pixels than any photo; the limit is {_mp(max_pixels)}.",
        ) from exc
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError, EOFError) as exc:
        raise damaged from exc

    with im:
        # Declared size only: no pixel data has been decoded yet.
        width, height = im.size
        _check_dimensions(width, height, len(data), max_pixels=max_pixels, min_side=min_side)
        if fmt in ("png", "webp") and getattr(im, "is_animated", False):
            raise UploadRejected(
                "unsupported_format",
                f"Animated images are not supported: upload a single still {_ACCEPTED} photo.",
            )
        try:
            im.load()
        except (Image.DecompressionBombError, MemoryError) as exc:
            raise UploadRejected(
                "decompression_bomb",
                f"The file expands to far more pixels than it declares; the limit is {_mp(max_pixels)}.",
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            logger.info("Rejected a %s upload that does not decode: %s", plugin, exc)
            raise damaged from exc
        # HEIF's decoder may report a different size once decoded (pillow-heif notes it).
        if im.size != (width, height):
            width, height = im.size
            _check_dimensions(width, height, len(data), max_pixels=max_pixels, min_side=min_side)
        # pillow-heif applies the HEIF rotation itself and resets this tag to 1.
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)

    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return CheckedUpload(fmt, content_type, extension, width, height)
