"""The offline backend: border-model/GrabCut cut-out, composed on the preset's white canvas.

No model download and no network: everything here is NumPy, OpenCV and
Pillow, so it runs in CI and on an air-gapped worker. Stages and the progress
they report: decoded (10), segmented (40), composed (70), encoded and
checked (90), done (100).
"""
from __future__ import annotations

import logging
import time
from .base import BackendConfig, GenerationResult, ProgressCallback
from .compose import finish
from .cut import Cut
from .decode import load_rgb_alpha
from .segment import segment_product
from .spec import JobSpec

logger = logging.getLogger(__name__)


class LocalBackend:
    name = "local"

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    def generate(
        self, image: bytes, job: JobSpec, progress: ProgressCallback
    ) -> GenerationResult:
        """Cut out the product in ``image`` and render it per ``options``.

        Raises ``EngineError`` (``invalid_image``, ``image_too_large``,
        ``no_product_found``; all permanent) and lets anything raised by
        ``progress`` propagate, which is how a canceled task stops here.
        """
        started = time.perf_counter()
        spec = job.outputs[0]
        rgb, alpha = load_rgb_alpha(image)
        progress(10)
        matte = segment_product(rgb, alpha)
        progress(40)
        cut = Cut(matte=matte, shadow=None, confidence=1.0, review_reasons=(),
                  segmenter="classical", model=None, model_sha256=None)
        result = finish(rgb, cut, spec, progress, straight_alpha=alpha is not None)
        progress(100)
        logger.info(
            "Local engine: %dx%d -> %s %dpx, compliance %s (%dms)",
            rgb.shape[1], rgb.shape[0], spec.preset, spec.size,
            "passed" if result.compliance and result.compliance["passed"] else "FAILED",
            (time.perf_counter() - started) * 1000,
        )
        return result
