from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        # What the queue needs from the realtime side, it gets through hooks that are
        # registered here: ``generation`` never imports ``notifications``.
        from apikeys.signals import key_revoked
        from generation import retention, stats, waiting

        from . import metrics  # noqa: F401  (defines this app's series, exported from the start)
        from . import signals  # noqa: F401  (connects the one post_save receiver)
        from .events import close_revoked_key
        from .presence import open_connections, seed_table
        from .retention import purge_when_expired

        retention.events_expired.connect(purge_when_expired, dispatch_uid="notifications.purge_when_expired")
        stats.count_connections_with(open_connections)
        stats.report_realtime_with(seed_table)
        # intake: Prefer: wait=N on submit waits on the task's own events (notifications.waiting).
        from .waiting import wait_for_task

        waiting.wait_for_task_with(wait_for_task)
        # API keys: a revoke closes the key's open sockets and streams.
        key_revoked.connect(close_revoked_key, dispatch_uid="notifications.close_revoked_key")
