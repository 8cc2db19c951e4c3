"""Event retention: the log is kept for ``IMAGEGEN_EVENT_RETENTION_SECONDS``.

Deleting in small batches keeps each statement's locks and WAL short while
workers append. A client resuming from before the oldest kept event is told
``recovered: false`` (see ``replay.read_page``) and reloads ``GET /api/tasks/``;
``EventCounter`` is never purged, so seqs keep counting from where they were.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from .models import Event

logger = logging.getLogger(__name__)


def purge_events(older_than: timedelta, batch_size: int = 1000, now: datetime | None = None) -> int:
    """Delete events created more than ``older_than`` before ``now``; returns how many."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoff = (now or timezone.now()) - older_than
    started = time.monotonic()
    total = 0
    while True:
        batch = Event.objects.filter(created_at__lt=cutoff).order_by("pk").values("pk")[:batch_size]
        # One statement per batch, its own short transaction (autocommit). Events
        # have no dependents, so the collector of QuerySet.delete() has nothing to
        # do but wrap it in a transaction of its own.
        deleted = Event.objects.filter(pk__in=batch)._raw_delete(Event.objects.db)
        total += deleted
        if deleted < batch_size:
            break
    if total:
        logger.info("Purged %d events older than %s (%dms)", total, cutoff.isoformat(), (time.monotonic() - started) * 1000)
    return total


def purge_expired_events(batch_size: int = 1000) -> int:
    """``purge_events`` with the configured retention."""
    return purge_events(timedelta(seconds=settings.IMAGEGEN_EVENT_RETENTION_SECONDS), batch_size)


def purge_when_expired(
    sender: Any, *, older_than: timedelta, dry_run: bool, now: datetime, batch_size: int, **kwargs: Any
) -> int:
    """The receiver of ``generation.retention.events_expired``: the queue's retention run
    (a worker's thread, or ``purge_tasks``) purges the event log through it."""
    if dry_run:
        return Event.objects.filter(created_at__lt=now - older_than).count()
    return purge_events(older_than, batch_size=batch_size, now=now)
