"""The no-op backend with the peers' pick-up mark as its first line (``IMAGEGEN_BACKEND``)."""
from __future__ import annotations

from generation.engine.base import GenerationResult, ProgressCallback
from generation.engine.noop import NoopBackend
from generation.engine.spec import JobSpec

from bench.peers import tally


class PickupBackend(NoopBackend):
    name = "noop"

    def generate(self, image: bytes, job: JobSpec, progress: ProgressCallback) -> GenerationResult:
        tally.picked_up()
        return super().generate(image, job, progress)
