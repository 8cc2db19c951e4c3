"""The database-backed gate the Gemini backend asks before each call (``IMAGEGEN_GEMINI_RPM``).

The engine imports no model: ``GenerationConfig.ready`` installs this gate into
the engine's configuration, and ``models.upstream.UpstreamLimit`` keeps its state.
"""
from __future__ import annotations

import threading

from django.conf import settings

from .models import UpstreamLimit

GEMINI = "gemini"


class GeminiRateGate:
    """Implements ``engine.RateGate`` for Gemini with the fleet's shared limit. One instance
    serves every runner thread; each thread has at most one call in flight, remembered here."""

    def __init__(self) -> None:
        self._calls = threading.local()

    def acquire(self) -> float:
        wait, stamp = UpstreamLimit.acquire(GEMINI, settings.IMAGEGEN_GEMINI_RPM, settings.IMAGEGEN_GEMINI_RATE_WINDOW)
        self._calls.stamp = stamp
        return wait

    def finished(self) -> None:
        stamp, self._calls.stamp = getattr(self._calls, "stamp", None), None
        if stamp is not None:
            UpstreamLimit.finish(GEMINI, stamp)

    def pause(self, seconds: float) -> float:
        return UpstreamLimit.pause(
            GEMINI, seconds, settings.IMAGEGEN_GEMINI_RPM, settings.IMAGEGEN_GEMINI_RATE_WINDOW
        )
