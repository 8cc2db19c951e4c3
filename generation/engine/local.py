"""The offline backend: the cut-out of :mod:`generation.engine.cut`, rendered per the task's options.

No model download and no network: the salient-object model ships in
``weights/`` and runs through OpenCV's own ONNX runtime, the rest is NumPy,
OpenCV and Pillow, so it runs in CI and on an air-gapped worker. Stages and
the progress they report: decoded (10), segmented (40), composed (70),
encoded and checked (90), done (100).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

from . import provenance
from .base import BackendConfig, GenerationResult, ProgressCallback
from .compose import finish
from .cut import cut_product
from .decode import load_rgb_alpha
from .encode import encode_mask
from .saliency import get_segmenter
from .spec import JobSpec

logger = logging.getLogger(__name__)


class LocalBackend:
    name = "local"

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        # Loaded (and checked: file, checksum, I/O) here, so a bad IMAGEGEN_SEGMENTER
        # is an ImproperlyConfigured when the backend is built, never a failed task.
        self.segmenter = get_segmenter(config.segmenter)

    def engine_info(self) -> dict[str, str | None]:
        return provenance(self.name, self.segmenter)

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        """Cut out the product in ``image`` and render it per ``job``'s output.

        Raises ``EngineError`` (``invalid_image``, ``image_too_large``,
        ``no_product_found``; all permanent) and lets anything raised by
        ``progress`` propagate, which is how a canceled task stops here.
        """
        started = time.perf_counter()
        spec = job.outputs[0]
        rgb, alpha = load_rgb_alpha(image)
        progress(10)
        cut = cut_product(rgb, alpha, hint_box=job.hint_box, segmenter=self.segmenter)
        progress(40)
        result = finish(rgb, cut, spec, progress, straight_alpha=alpha is not None)
        engine = self.engine_info()
        if cut.segmenter == "alpha":
            # The seller's own transparency made this cut, not the model.
            engine.update(segmenter="alpha", model=None, model_sha256=None)
        result = replace(result, mask=encode_mask(cut.matte), engine=engine)
        progress(100)
        logger.info(
            "Local engine: %dx%d -> %s %dpx, %s, confidence %.2f%s, compliance %s (%dms)",
            rgb.shape[1], rgb.shape[0], spec.preset, spec.size, cut.segmenter, cut.confidence,
            " (needs review: " + ", ".join(r.code for r in cut.review_reasons) + ")" if cut.needs_review else "",
            "passed" if result.compliance and result.compliance["passed"] else "FAILED",
            (time.perf_counter() - started) * 1000,
        )
        return result

