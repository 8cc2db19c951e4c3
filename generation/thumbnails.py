"""Small previews of task images for the admin: made on request, never stored,
served only through the admin's staff-checked image view."""
from __future__ import annotations

import io

from django.db.models.fields.files import FieldFile
from PIL import Image, ImageOps
from .engine.heif import enable_heif

THUMB_SIDE = 160



def thumbnail(field: FieldFile, side: int = THUMB_SIDE) -> tuple[bytes, str]:
    """Returns (bytes, content type): PNG if the image has transparency, else JPEG.
    Raises OSError (or a PIL error) if the file is missing or undecodable."""
    with field.open("rb") as fh:
        head = fh.read(12)
        fh.seek(0)
        if head[4:8] == b"ftyp":
            enable_heif()
        with Image.open(fh) as im:
            # JPEG decodes at 1/2..1/8 scale here: a 20 MB photo costs little to preview.
            im.draft("RGB", (side * 2, side * 2))
            im = ImageOps.exif_transpose(im)
            im.thumbnail((side, side))
            transparent = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            out = io.BytesIO()
            if transparent:
                im.convert("RGBA").save(out, "PNG", optimize=True)
                return out.getvalue(), "image/png"
            im.convert("RGB").save(out, "JPEG", quality=80)
            return out.getvalue(), "image/jpeg"
