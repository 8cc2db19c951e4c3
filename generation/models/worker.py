"""Worker processes: one row per running ``runworker`` (or embedded worker), kept alive by heartbeats.

The model is ``WorkerProcess`` so that ``Worker`` names one thing only: the
claim-run-heartbeat loop in ``generation.worker`` that writes these rows.
"""
from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import ExpressionWrapper, F
from django.utils import timezone


def declared_timeout() -> timedelta:
    """The heartbeat timeout a new worker row declares unless told otherwise."""
    return timedelta(seconds=settings.IMAGEGEN_HEARTBEAT_TIMEOUT)


def alive_until(prefix: str = "") -> models.Expression:
    """When the worker (reached through ``prefix``, e.g. ``"worker__"``) stops counting as
    alive: its last heartbeat plus the timeout it declared itself. Judging a worker by the
    reader's own setting let a quick-timeout worker take a healthy slow-beating worker's
    tasks (two attempts at once, then ``worker_lost``)."""
    return ExpressionWrapper(
        F(f"{prefix}last_heartbeat") + F(f"{prefix}heartbeat_timeout"), output_field=models.DateTimeField()
    )


class WorkerQuerySet(models.QuerySet["WorkerProcess"]):
    def live(self, timeout: float | None = None) -> WorkerQuerySet:
        """Workers that have not stopped and sent a heartbeat within the timeout each of them
        declared (or within ``timeout`` seconds, when an operator gives one)."""
        now = timezone.now()
        if timeout is not None:
            return self.filter(stopped_at__isnull=True, last_heartbeat__gte=now - timedelta(seconds=timeout))
        return self.alias(alive_until=alive_until()).filter(stopped_at__isnull=True, alive_until__gte=now)

    def live_capacity(self) -> int:
        """Runner threads of the live workers: how many tasks the fleet runs at once."""
        return int(self.live().aggregate(n=models.Sum("concurrency"))["n"] or 0)


class WorkerProcess(models.Model):
    """One row per running worker process (a fresh row each start), kept alive by heartbeats."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    host = models.CharField(max_length=255, default=socket.gethostname)
    pid = models.PositiveIntegerField(default=os.getpid)
    concurrency = models.PositiveSmallIntegerField(default=1)
    # Seconds of silence after which this worker counts as dead: its own IMAGEGEN_HEARTBEAT_TIMEOUT,
    # declared here so every other worker judges it by it (it beats every third of it).
    heartbeat_timeout = models.DurationField(default=declared_timeout)
    embedded = models.BooleanField(default=False)
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(default=timezone.now, db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    tasks_done = models.PositiveIntegerField(default=0)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        db_table = "generation_worker"  # the table keeps the name it was created with
        ordering = ["-started_at"]
        verbose_name = "worker process"

    def __str__(self) -> str:
        return f"{self.name} ({self.host}:{self.pid})"

    def beat(self, tasks_done: int) -> None:
        # Not task state: a plain UPDATE, no event.
        self.last_heartbeat = timezone.now()
        WorkerProcess.objects.filter(pk=self.pk).update(last_heartbeat=self.last_heartbeat, tasks_done=tasks_done)

    def mark_stopped(self, tasks_done: int) -> None:
        WorkerProcess.objects.filter(pk=self.pk).update(stopped_at=timezone.now(), tasks_done=tasks_done)
