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
        started = time.monotonic()
        deadline = started + cls.seconds
        while (now := time.monotonic()) < deadline:
            # Rising with the time spent, never saturating before the end: every write
            # the worker lets through (one per interval) carries a new value.
            value = 1 + int(98 * (now - started) / cls.seconds)
            progress(value)
            cls.reports.append((time.time(), value))
            time.sleep(0.004)  # stands for a slice of image work between reports
        return white_jpeg()
