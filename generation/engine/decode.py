"""Decode an uploaded photo into plain sRGB pixels (and its alpha, if it has one).

Uploads are validated before they reach a backend (``upload.check_upload``),
but this module is also fed images the engine did not check (a Gemini answer),
so it still opens with an explicit plugin list and a pixel limit of its own.
"""
from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .base import EngineError
from .heif import enable_heif

logger = logging.getLogger(__name__)

#: Decoding more than this is refused: a 50 MP RGB frame is 150 MB before any
#: float copy, and no marketplace canvas needs more than 16 MP.
MAX_DECODE_PIXELS = 50_000_000

#: An alpha channel counts as "the seller already removed the background" only
#: when at least this share of the image is (mostly) transparent; a stray
#: transparent pixel or an all-opaque RGBA export is just an RGB photo.
MIN_TRANSPARENT_SHARE = 0.01

_PLUGINS = ["JPEG", "PNG", "WEBP", "HEIF", "MPO"]

_srgb_profile: ImageCms.ImageCmsProfile | None = None


def _looks_like_heif(data: bytes) -> bool:
    return len(data) >= 12 and data[4:8] == b"ftyp"


def srgb_profile() -> ImageCms.ImageCmsProfile:
    global _srgb_profile
    if _srgb_profile is None:
        _srgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _srgb_profile


def _undecodable() -> EngineError:
    return EngineError(
        "invalid_image",
        "The photo could not be read: upload the original JPEG, PNG, WebP or HEIC file again.",
        transient=False,
    )


def _to_srgb(im: Image.Image) -> Image.Image:
    """Convert through the embedded ICC profile (CMYK, Adobe RGB, Display P3...) to sRGB.

    Without this a CMYK JPEG comes out with inverted or muddy colours and a
    wide-gamut photo looks desaturated. ``alpha`` is carried separately by the
    caller, so only colour modes reach here.
    """
    icc = im.info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out_mode = "RGB"
            converted = ImageCms.profileToProfile(
                im, src, srgb_profile(), outputMode=out_mode,
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            # A broken profile should not cost the seller the task: fall back
            # to Pillow's naive conversion and say so in the log.
            logger.warning("Ignoring an unusable ICC profile (%s): %s", im.mode, exc)
    # convert() to the mode an image already has is a full copy.
    return im if im.mode == "RGB" else im.convert("RGB")


def _split_alpha(im: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """Colour image (no alpha) and the alpha array, whatever the input mode."""
    if im.mode == "P":
        # Palette transparency lives in info["transparency"]; RGBA makes it explicit.
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif im.mode in ("1", "L") and "transparency" in im.info:
        im = im.convert("LA")
    elif im.mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit greyscale PNG: scale to 8 bits rather than clip at 255.
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")

    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        if im.mode in ("RGBa", "La", "PA"):
            im = im.convert("RGBA")
        alpha = np.asarray(im.getchannel("A"))
        # A grey+alpha image stays grey so a grey ICC profile still applies.
        colour = im.convert("L") if im.mode == "LA" else im.convert("RGB")
        if "icc_profile" in im.info:
            colour.info["icc_profile"] = im.info["icc_profile"]
        return colour, alpha
    return im, None


def load_rgb_alpha(data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode ``data`` to ``(rgb, alpha)``.

    ``rgb`` is an HxWx3 uint8 sRGB array, upright per the EXIF orientation.
    ``alpha`` is an HxW uint8 array (0 transparent .. 255 opaque) when the
    input has a meaningful transparency (at least
    :data:`MIN_TRANSPARENT_SHARE` of the pixels below half opacity), else
    ``None``. The RGB of transparent pixels is whatever the file holds
    (often black): use it only through the alpha.

    Raises ``EngineError("invalid_image")`` for undecodable data and
    ``EngineError("image_too_large")`` above :data:`MAX_DECODE_PIXELS`.
    """
    if _looks_like_heif(data):
        enable_heif()
    try:
        Image.init()
        # Only registered plugins may be named (HEIF appears once enable_heif ran).
        im = Image.open(io.BytesIO(data), formats=[f for f in _PLUGINS if f in Image.OPEN])
        if im.width * im.height > MAX_DECODE_PIXELS:
            raise EngineError(
                "image_too_large",
                f"The photo is {im.width} x {im.height} pixels; upload one under "
                f"{MAX_DECODE_PIXELS // 1_000_000} megapixels.",
            )
        im.load()
        icc = im.info.get("icc_profile")
        # In place: without an orientation tag the copy it would return is 8 MB of a 2000 px photo's
        # pixels for nothing.
        ImageOps.exif_transpose(im, in_place=True)
    except EngineError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, KeyError,
            Image.DecompressionBombError) as exc:
        logger.info("Could not decode input image: %s", exc)
        raise _undecodable() from exc
    if icc and "icc_profile" not in im.info:
        im.info["icc_profile"] = icc

    colour, alpha = _split_alpha(im)
    rgb = np.ascontiguousarray(np.asarray(_to_srgb(colour), dtype=np.uint8))
    if alpha is not None:
        transparent = np.count_nonzero(alpha < 128)
        if transparent < MIN_TRANSPARENT_SHARE * alpha.size:
            alpha = None
        else:
            alpha = np.ascontiguousarray(alpha, dtype=np.uint8)
    return rgb, alpha
