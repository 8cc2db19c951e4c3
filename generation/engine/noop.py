"""A backend that does no image work, for measuring the queue itself.

``IMAGEGEN_BACKEND=generation.engine.noop.NoopBackend`` makes every task
finish at once with a tiny white JPEG, so a queue benchmark measures claims,
commits and events rather than OpenCV.
"""
from __future__ import annotations

import io
from PIL import Image

from .base import BackendConfig, GenerationResult, ProgressCallback
from .spec import JobSpec

_SIDE = 8


def _white_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (_SIDE, _SIDE), (255, 255, 255)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


_WHITE_JPEG = _white_jpeg()


class NoopBackend:
    name = "noop"

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    def generate(
        self, image: bytes, job: JobSpec, progress: ProgressCallback
    ) -> GenerationResult:
        progress(100)
        return GenerationResult(
            data=_WHITE_JPEG, content_type="image/jpeg", extension="jpg",
            width=_SIDE, height=_SIDE, compliance=None, engine={"backend": self.name},
        )
