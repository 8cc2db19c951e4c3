"""Backends for tests, selected by dotted path like any other (IMAGEGEN_BACKEND)."""
from __future__ import annotations

import io
import os
import threading
import time

from PIL import Image

from generation.engine.base import BackendConfig, EngineError, GenerationResult, ProgressCallback
from generation.engine.spec import JobSpec


class TestBackend:
    """Base of the test backends: constructed like any backend, configuration unused."""

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, config: BackendConfig) -> None:
        self.config = config


def white_jpeg(side: int = 64) -> GenerationResult:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (255, 255, 255)).save(buf, "JPEG")
    return GenerationResult(buf.getvalue(), "image/jpeg", "jpg", side, side, None)


class QuickBackend(TestBackend):
    name = "quick"

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        progress(50)
        return white_jpeg()


class SlowBackend(TestBackend):
    """Works for TEST_BACKEND_SECONDS (default 60), reporting progress every 50 ms,
    so a cancel or a lost claim is noticed at the next step."""

    name = "slow"

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        total = float(os.environ.get("TEST_BACKEND_SECONDS", "60"))
        deadline = time.monotonic() + total
        step = 1
        while time.monotonic() < deadline:
            progress(min(step, 99))
            step += 1
            time.sleep(0.05)
        return white_jpeg()


class SilentBackend(TestBackend):
    """Works for TEST_BACKEND_SECONDS (default 60) without a word in between, like one long
    upstream call (a Gemini request): nothing notices a lost claim until it returns."""

    name = "silent"

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        time.sleep(float(os.environ.get("TEST_BACKEND_SECONDS", "60")))
        return white_jpeg()


class GatedBackend(TestBackend):
    """Signals ``started``, then reports progress until ``release`` is set (in-process tests)."""

    name = "gated"
    started = threading.Event()
    release = threading.Event()

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        progress(10)
        type(self).started.set()
        step = 11
        while not type(self).release.wait(0.02):
            progress(min(step, 99))
            step += 1
        return white_jpeg()


class HushedGatedBackend(TestBackend):
    """Signals ``started``, then waits for ``release`` without reporting progress (one long silent call)."""

    name = "hushed-gated"
    started = threading.Event()
    release = threading.Event()

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        type(self).started.set()
        type(self).release.wait(60)
        return white_jpeg()


class FlakyBackend(TestBackend):
    """Raises the configured EngineError for the first ``failures`` calls, then succeeds."""

    name = "flaky"
    failures = 1
    error = EngineError("upstream_timeout", "The upstream timed out.", transient=True)
    calls = 0

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        cls = type(self)
        cls.calls += 1
        if cls.calls <= cls.failures:
            raise cls.error
        return white_jpeg()


class BurstBackend(FlakyBackend):
    """Refuses a photo with a ``hint_box`` for good (``no_product_found``); other photos behave as
    ``FlakyBackend`` (in a fresh process: the first call fails transiently, later ones succeed)."""

    name = "burst"

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        if job.hint_box is not None:
            raise EngineError("no_product_found", "No product stands out from the background of this photo.")
        return super().generate(image, job, progress)


class CrashingBackend(TestBackend):
    name = "crashing"

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        raise ZeroDivisionError("bug")


class CancelLastBackend(TestBackend):
    """On its first call, cancels the newest pending-or-processing task (one waiting in the batch)."""

    name = "cancel-last"

    calls = 0

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        from generation.models import GenerationTask

        type(self).calls += 1
        if type(self).calls == 1:
            last = GenerationTask.objects.filter(status__in=["pending", "processing"]).order_by("-id").first()
            if last is not None and last.status == "processing":
                last.cancel()
        return white_jpeg()


class CancelFirstOnSecondCallBackend(TestBackend):
    """On its second call, cancels the task it produced first (done, not yet recorded)."""

    name = "cancel-first"
    calls = 0

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        from generation.models import GenerationTask

        cls = type(self)
        cls.calls += 1
        if cls.calls == 2:
            GenerationTask.objects.filter(status="processing").order_by("id").first().cancel()
        return white_jpeg()


class ReviewBackend(TestBackend):
    """A backend that doubts its own cut-out, as the local engine does on a hard photo.

    Without a hint it "cuts" the middle half of the photo and reports it as needing a
    person's look (with reasons, a failed ``fill`` check and a low confidence); a flat
    photo (no contrast at all: nothing to cut) is refused with ``no_product_found``.
    With ``hint_box`` it cuts exactly that box and reports a clean, passed result.
    The mask is an 8-bit greyscale PNG at the photo's oriented size, like the real one.
    """

    name = "review"
    REASONS = [
        {"code": "touches_frame", "message": "The cut-out touches the edge of the photo: part of the product may be missing."},
        {"code": "low_confidence", "message": "The outline of the product is unclear against this background."},
    ]

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        from PIL import ImageOps, ImageStat

        with Image.open(io.BytesIO(image)) as im:
            photo = ImageOps.exif_transpose(im).convert("RGB")
        progress(30)
        width, height = photo.size
        hint = job.hint_box
        if hint is None and max(ImageStat.Stat(photo.convert("L")).stddev) < 1.0:
            raise EngineError("no_product_found", "No product stands out from the background of this photo.")
        box = tuple(hint) if hint is not None else (width // 4, height // 4, 3 * width // 4, 3 * height // 4)
        mask = Image.new("L", (width, height), 0)
        mask.paste(255, box)
        mask_png = io.BytesIO()
        mask.save(mask_png, "PNG")

        cut = photo.crop(box)
        cut.thumbnail((200, 200))
        canvas = Image.new("RGB", (256, 256), (255, 255, 255))
        canvas.paste(cut, ((256 - cut.width) // 2, (256 - cut.height) // 2))
        out = io.BytesIO()
        canvas.save(out, "JPEG", quality=92)

        doubtful = hint is None
        compliance = {
            "preset": job.outputs[0].preset,
            "passed": not doubtful,
            "checks": {
                "format": {"passed": True, "value": "jpeg", "expected": ["jpeg", "png"]},
                "background_white": {"passed": True, "value": {"off_white_pixels": 0}, "expected": {"off_white_pixels": 0}},
                "fill": {"passed": not doubtful, "value": 0.62 if doubtful else 0.85, "expected": [0.8, 0.95]},
                "centred": {"passed": True, "value": 0.5, "expected": "<= 2.56 px"},
            },
            "needs_review": doubtful,
            "cut_confidence": 0.41 if doubtful else 0.93,
            "review_reasons": list(self.REASONS) if doubtful else [],
        }
        return GenerationResult(
            out.getvalue(), "image/jpeg", "jpg", 256, 256, compliance, mask=mask_png.getvalue(),
            engine={"backend": "review", "segmenter": "classical", "model": None, "model_sha256": None, "version": "test"},
        )


class GeminiCallBackend:
    """Only the Gemini call of the real ``gemini`` backend: the fleet's gate, the real
    google-genai client, its error mapping (429 -> ``UpstreamBusy``), without the image
    pipeline around it, so a test of the fleet's rate is bound by the rate, not by CPU."""

    name = "gemini-call"

    def __init__(self, config: BackendConfig) -> None:
        from generation.engine.gemini import GeminiBackend

        self.inner = GeminiBackend(config)

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        progress(10)
        self.inner._admit()
        try:
            self.inner._call(white_jpeg().data)
        finally:
            self.inner.config.gemini_rate_gate.finished()
        return white_jpeg()
