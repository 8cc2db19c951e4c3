"""Backends for the notifications tests (dotted-path IMAGEGEN_BACKEND)."""
from __future__ import annotations

import time

from generation.engine.base import BackendConfig, GenerationResult, ProgressCallback
from generation.engine.spec import JobSpec
from tests.generation.backends import white_jpeg


class ChattyBackend:
    """Reports progress every few milliseconds for ``seconds``: far more often
    than progress may be written, so the writes must coalesce."""

    name = "chatty"
    seconds = 1.2
    reports: list[tuple[float, int]] = []

    def __init__(self, config: BackendConfig) -> None:
        pass

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        cls = type(self)
        deadline = time.monotonic() + cls.seconds
        step = 1
        while time.monotonic() < deadline:
            progress(min(step, 99))
            cls.reports.append((time.time(), min(step, 99)))
            step += 1
            time.sleep(0.004)  # stands for a slice of image work between reports
        return white_jpeg()
