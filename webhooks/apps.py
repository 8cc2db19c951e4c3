from __future__ import annotations

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        # Delivery runs inside every worker process (runworker and the embedded worker): the
        # worker announces its start and stop, and we start and stop our loop with it.
        # ``generation`` and ``notifications`` never import this app.
        from generation import retention, worker

        from . import metrics  # noqa: F401  (this app's series, exported from the start)
        from .delivery import start_with_worker, stop_with_worker
        from .retention import purge_with_events

        worker.worker_started.connect(start_with_worker, dispatch_uid="webhooks.start_with_worker")
        worker.worker_stopped.connect(stop_with_worker, dispatch_uid="webhooks.stop_with_worker")
        retention.events_expired.connect(purge_with_events, dispatch_uid="webhooks.purge_with_events")
