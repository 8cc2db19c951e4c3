"""Generation engines, selected by ``IMAGEGEN_BACKEND`` (a short name or a dotted path).

Like Django's e-mail backends: ``local`` and ``gemini`` are built in, anything
else is imported as ``package.module.ClassName`` and called with a
:class:`~generation.engine.base.BackendConfig`.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

from .base import (
    Backend, BackendConfig, EngineError, GenerationResult, InvalidOptions, RateGate, RenderedOutput, UpstreamBusy,
)

if TYPE_CHECKING:
    from .saliency import Segmenter

__all__ = ["ENGINE_VERSION", "provenance", "Backend", "BackendConfig", "EngineError", "GenerationResult", "InvalidOptions",
           "RateGate", "RenderedOutput", "UpstreamBusy", "get_backend", "install_gemini_rate_gate"]

#: Recorded with every result (``engine.version``): bump it when a change alters the cut-outs or
#: their review (2.5: the ``backdrop_piece`` review flag; 2.6 ``part_left_out``; 2.7 ``gap_filled``;
#: 2.8 the second look puts back pieces of the first cut in colours the border lacks; 2.9 the larger
#: look is not taken when it runs off the frame where the first cut did not).
ENGINE_VERSION = "2.9"

def provenance(backend: str, segmenter: Segmenter, **extra: str | None) -> dict[str, str | None]:
    """The ``engine`` record of a result: which backend and segmenter (model file and
    checksum) made it, at which engine version, plus what a backend adds."""
    return {
        "backend": backend,
        "segmenter": segmenter.name,
        "model": segmenter.model,
        "model_sha256": segmenter.model_sha256,
        "version": ENGINE_VERSION,
        **extra,
    }


BUILTIN_BACKENDS = {
    "local": "generation.engine.local.LocalBackend",
    "gemini": "generation.engine.gemini.GeminiBackend",
}

# One backend instance per worker thread: the Gemini client must be kept alive
# for the whole call (an inline client can be garbage-collected mid-request)
# and is not shared across threads.
_local = threading.local()


# The fleet-wide Gemini gate. The engine imports no model, so the queue installs its
# database-backed gate here at start (``GenerationConfig.ready``).
_gemini_rate_gate: RateGate | None = None


def install_gemini_rate_gate(gate: RateGate | None) -> None:
    global _gemini_rate_gate
    _gemini_rate_gate = gate


def config_from_settings() -> BackendConfig:
    from django.conf import settings

    return BackendConfig(
        gemini_api_key=settings.GEMINI_API_KEY,
        gemini_model=settings.GEMINI_MODEL,
        gemini_base_url=settings.GEMINI_BASE_URL,
        gemini_api_version=settings.GEMINI_API_VERSION,
        gemini_timeout_ms=settings.GEMINI_TIMEOUT_MS,
        fidelity_mode=settings.IMAGEGEN_FIDELITY_MODE,
        segmenter=settings.IMAGEGEN_SEGMENTER,
        gemini_rate_gate=_gemini_rate_gate,
    )


def load_backend(name: str, config: BackendConfig | None = None) -> Backend:
    path = BUILTIN_BACKENDS.get(name, name)
    cls: Any = import_string(path)
    return cls(config or config_from_settings())


def get_backend() -> Backend:
    """The calling thread's backend for the configured ``IMAGEGEN_BACKEND``."""
    from django.conf import settings

    name = settings.IMAGEGEN_BACKEND
    cached = getattr(_local, "backend", None)
    if cached is None or getattr(_local, "name", None) != name:
        cached = load_backend(name)
        _local.backend, _local.name = cached, name
    return cached
