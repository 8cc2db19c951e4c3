"""The database-backed gate the Gemini backend asks before each call (``IMAGEGEN_GEMINI_RPM``).

The engine imports no model: ``GenerationConfig.ready`` installs this gate into
the engine's configuration, and ``models.upstream.UpstreamLimit`` keeps its state.
"""
from __future__ import annotations

from django.conf import settings

from .models import UpstreamLimit

GEMINI = "gemini"


class GeminiRateGate:
    """Implements ``engine.RateGate`` for Gemini with the fleet's shared limit."""

    def acquire(self) -> float:
        return UpstreamLimit.acquire(GEMINI, settings.IMAGEGEN_GEMINI_RPM, settings.IMAGEGEN_GEMINI_RATE_WINDOW)

    def pause(self, seconds: float) -> float:
        return UpstreamLimit.pause(
            GEMINI, seconds, settings.IMAGEGEN_GEMINI_RPM, settings.IMAGEGEN_GEMINI_RATE_WINDOW
        )
