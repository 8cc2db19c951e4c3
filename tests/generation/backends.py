"""Backends for tests, selected by dotted path like any other (IMAGEGEN_BACKEND)."""
from __future__ import annotations

import io
import os
import threading
import time
from typing import Any, Mapping

from PIL import Image

from generation.engine.base import BackendConfig, EngineError, GenerationResult, ProgressCallback


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

    def generate(self, image: bytes, options: Mapping[str, Any], progress: ProgressCallback) -> GenerationResult:
        progress(50)
        return white_jpeg()


class SlowBackend(TestBackend):
    """Works for TEST_BACKEND_SECONDS (default 60), reporting progress every 50 ms,
    so a cancel or a lost claim is noticed at the next step."""

    name = "slow"

    def generate(self, image: bytes, options: Mapping[str, Any], progress: ProgressCallback) -> GenerationResult:
        total = float(os.environ.get("TEST_BACKEND_SECONDS", "60"))
        deadline = time.monotonic() + total
        step = 1
        while time.monotonic() < deadline:
            progress(min(step, 99))
            step += 1
            time.sleep(0.05)
        return white_jpeg()


class GatedBackend(TestBackend):
    """Signals ``started``, then reports progress until ``release`` is set (in-process tests)."""

    name = "gated"
    started = threading.Event()
    release = threading.Event()

    def generate(self, image: bytes, options: Mapping[str, Any], progress: ProgressCallback) -> GenerationResult:
        progress(10)
        type(self).started.set()
        step = 11
        while not type(self).release.wait(0.02):
            progress(min(step, 99))
            step += 1
        return white_jpeg()


class FlakyBackend(TestBackend):
    """Raises the configured EngineError for the first ``failures`` calls, then succeeds."""

    name = "flaky"
    failures = 1
    error = EngineError("upstream_timeout", "The upstream timed out.", transient=True)
    calls = 0

    def generate(self, image: bytes, options: Mapping[str, Any], progress: ProgressCallback) -> GenerationResult:
        cls = type(self)
        cls.calls += 1
        if cls.calls <= cls.failures:
            raise cls.error
        return white_jpeg()


class CrashingBackend(TestBackend):
    name = "crashing"

    def generate(self, image: bytes, options: Mapping[str, Any], progress: ProgressCallback) -> GenerationResult:
        raise ZeroDivisionError("bug")


class CancelLastBackend(TestBackend):
    """On its first call, cancels the newest pending-or-processing task (one waiting in the batch)."""

    name = "cancel-last"

    calls = 0

    def generate(self, image: bytes, options: Mapping[str, Any], progress: ProgressCallback) -> GenerationResult:
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

    def generate(self, image: bytes, options: Mapping[str, Any], progress: ProgressCallback) -> GenerationResult:
        from generation.models import GenerationTask

        cls = type(self)
        cls.calls += 1
        if cls.calls == 2:
            GenerationTask.objects.filter(status="processing").order_by("id").first().cancel()
        return white_jpeg()
