"""The offline backend: the cut-out of :mod:`generation.engine.cut`, rendered per the task's outputs.

No model download and no network: the salient-object model ships in
``weights/`` and runs through OpenCV's own ONNX runtime, the rest is NumPy,
OpenCV and Pillow, so it runs in CI and on an air-gapped worker. The cut is
made once per task and rendered once per output. Stages and the progress they
report: decoded (10), segmented (40), each output composed, encoded and
checked (40-90, shared between the outputs), done (100).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

from . import provenance
from .base import BackendConfig, GenerationResult, ProgressCallback
from .compose import finish_all
from .cut import cut_product
from .decode import load_rgb_alpha
from .encode import encode_mask
from .overlap import beside
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
        """Cut out the product in ``image`` once and render it per each of ``job``'s outputs.

        Raises ``EngineError`` (``invalid_image``, ``image_too_large``,
        ``no_product_found``; all permanent) and lets anything raised by
        ``progress`` propagate, which is how a canceled task stops here.
        """
        started = time.perf_counter()
        rgb, alpha = load_rgb_alpha(image)
        progress(10)
        cut = cut_product(rgb, alpha, hint_box=job.hint_box, segmenter=self.segmenter)
        progress(40)
        # The stored mask's PNG needs only the matte: encoded beside the outputs' render, encode and
        # check (a canceled task's mask is simply dropped when it is done).
        mask = beside(encode_mask, cut.matte)
        result = finish_all(rgb, cut, job, progress, straight_alpha=alpha is not None)
        engine = self.engine_info()
        if cut.segmenter == "alpha":
            # The seller's own transparency made this cut, not the model.
            engine.update(segmenter="alpha", model=None, model_sha256=None)
        result = replace(result, mask=mask.result(), engine=engine)
        progress(100)
        logger.info(
            "Local engine: %dx%d -> %s, %s, confidence %.2f%s (%dms)",
            rgb.shape[1], rgb.shape[0],
            ", ".join(f"{o.name} {o.width}x{o.height} {'passed' if o.compliance and o.compliance['passed'] else 'FAILED'}"
                      for o in result.outputs),
            cut.segmenter, cut.confidence,
            " (needs review: " + ", ".join(r.code for r in cut.review_reasons) + ")" if cut.needs_review else "",
            (time.perf_counter() - started) * 1000,
        )
        return result

