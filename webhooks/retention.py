"""Finished deliveries leave the delivery log with the events they carried."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .models import WebhookDelivery


def purge_with_events(sender: Any, *, older_than: timedelta, dry_run: bool, now: datetime, batch_size: int,
                      **kwargs: Any) -> int:
    """A receiver of ``generation.retention.events_expired``: deliveries (not pending) whose event
    is older than the event retention. Returns 0: the signal's answers count events."""
    if not dry_run:
        old = WebhookDelivery.objects.filter(event_created_at__lt=now - older_than).exclude(
            status=WebhookDelivery.Status.PENDING)
        while True:
            batch = list(old.values_list("pk", flat=True)[:batch_size])
            if not batch:
                break
            WebhookDelivery.objects.filter(pk__in=batch).delete()
    return 0
