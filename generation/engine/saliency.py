"""The segmenters ``IMAGEGEN_SEGMENTER`` selects: the learned salient-object model or the classical pipeline."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segmenter:
    """What produces the cut: ``name`` is "u2netp", "classical" or the operator's model file name."""

    name: str
    model: str | None = None
    model_sha256: str | None = None


CLASSICAL = Segmenter("classical")
