from __future__ import annotations

from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation queue"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from . import metrics  # noqa: F401  (defines this app's series and registers the scrape-time collector)
        from .engine import install_gemini_rate_gate
        from .models.creation import force_generic_plans
        from .upstream import GeminiRateGate

        # The engine imports no model: it gets the fleet's Gemini rate limit through this gate.
        install_gemini_rate_gate(GeminiRateGate())
        # Every PostgreSQL session runs the prepared statements of generation.models on their generic plans.
        connection_created.connect(force_generic_plans, dispatch_uid="generation.force_generic_plans")
