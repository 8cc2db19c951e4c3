from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        # What the queue needs from the realtime side, it gets through hooks that are
        # registered here: ``generation`` never imports ``notifications``.
        from generation import retention, stats, waiting

        from . import metrics  # noqa: F401  (defines this app's series, exported from the start)
        from . import signals  # noqa: F401  (connects the one post_save receiver)
        from .presence import open_connections
        from .retention import purge_when_expired

        retention.events_expired.connect(purge_when_expired, dispatch_uid="notifications.purge_when_expired")
        stats.count_connections_with(open_connections)
        # intake: Prefer: wait=N on submit waits on the task's own events (notifications.waiting).
        from .waiting import wait_for_task

        waiting.wait_for_task_with(wait_for_task)
