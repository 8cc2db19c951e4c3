from __future__ import annotations

from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation queue"

    def ready(self) -> None:
        from . import metrics  # noqa: F401  (defines this app's series and registers the scrape-time collector)
        from .engine import install_gemini_rate_gate
        from .upstream import GeminiRateGate

        # The engine imports no model: it gets the fleet's Gemini rate limit through this gate.
        install_gemini_rate_gate(GeminiRateGate())
