"""The offline backend: border-model/GrabCut cut-out, composed on the preset's white canvas.

No model download and no network: everything here is NumPy, OpenCV and
Pillow, so it runs in CI and on an air-gapped worker. Stages and the progress
they report: decoded (10), segmented (40), composed (70), encoded and
checked (90), done (100).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping

from .base import BackendConfig, GenerationResult, ProgressCallback
from .compose import finish
from .decode import load_rgb_alpha
from .presets import validate_options
from .segment import segment_product

logger = logging.getLogger(__name__)


class LocalBackend:
    name = "local"

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    def generate(
        self, image: bytes, options: Mapping[str, Any], progress: ProgressCallback
    ) -> GenerationResult:
        """Cut out the product in ``image`` and render it per ``options``.

        Raises ``EngineError`` (``invalid_image``, ``image_too_large``,
        ``no_product_found``; all permanent) and lets anything raised by
        ``progress`` propagate, which is how a canceled task stops here.
        """
        started = time.perf_counter()
        # Options were validated at submit time; normalising again is
        # idempotent and fills the defaults when a caller passes {}.
        opts = validate_options(options or {})
        rgb, alpha = load_rgb_alpha(image)
        progress(10)
        matte = segment_product(rgb, alpha)
        progress(40)
        result = finish(rgb, matte, opts, progress, straight_alpha=alpha is not None)
        progress(100)
        logger.info(
            "Local engine: %dx%d -> %s %dpx, compliance %s (%dms)",
            rgb.shape[1], rgb.shape[0], opts["preset"], opts["size"],
            "passed" if result.compliance and result.compliance["passed"] else "FAILED",
            (time.perf_counter() - started) * 1000,
        )
        return result
