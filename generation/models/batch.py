"""Batches: up to 100 photos submitted at once with shared options, followed and archived as one.

A batch is a row of counts over its tasks. The counts change in the same
transaction as the task change that causes them: every task transition that
changes a batch task's status locks the batch row (``Batch.locked``), saves the
task, then ``recount``s the batch's tasks (one GROUP BY over the batch's index),
which saves only when a count moved. Each such save fires the
``post_save`` receiver of the realtime side (``notifications.signals``), which
appends a ``batch_update`` event, and a ``batch_complete`` after it when the
save finished the batch, in the owner's log: generation never records events.

Lock order, so two transactions can never wait on each other: task rows, then
batch rows (each kind in id order), then the owner's event counter (which every
event's insert takes). A transition of one task takes its task, then its batch
(before its own event is appended), then the counter; a transaction that changes
several tasks (a claim of several, a batch of results, a rescue) takes its task
rows, then ``lock_batches_of`` takes their batches in id order, before any event.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from .task import GenerationTask, InvalidTransition, _announce_work, _json_value
from .transition_log import log_transition
from .usage import DailyUsage

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

#: The batch lane: batch tasks are claimed after every pending single submission
#: (priority 0), so one photo sent after a 100-photo batch does not wait behind it.
BATCH_PRIORITY = -10

#: At most this many photos (or URLs) per batch.
MAX_BATCH_IMAGES = 100

COUNTED = ("pending", "processing", "completed", "failed", "canceled")


@dataclass(frozen=True)
class BatchPart:
    """One checked photo of a batch request, ready to be stored."""

    file: Any | None  # a Django File (the checked upload); None for a photo fetched from image_url
    content_type: str
    options: dict[str, Any]
    source_name: str  # the client's file name (or the URL's), only ever used to name archive entries
    image_url: str | None = None
    expires_in: int | None = None


class BatchQuerySet(models.QuerySet["Batch"]):
    def for_user(self, user: AbstractBaseUser) -> BatchQuerySet:
        return self.filter(user=user)


class Batch(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # no task started yet
        PROCESSING = "processing"  # some task started or finished, some not finished
        COMPLETED = "completed"  # every task finished (completed, failed or canceled one by one)
        CANCELED = "canceled"  # every task finished after the batch was canceled

    FINISHED = (Status.COMPLETED, Status.CANCELED)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_batches")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # The shared options as submitted (each task holds its own parsed copy).
    options = models.JSONField(default=dict, blank=True)
    client_ref = models.CharField(max_length=200, null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    # SHA-256 of the request (its photos and fields): a key reused for another request is refused.
    fingerprint = models.CharField(max_length=64, blank=True)
    total = models.PositiveSmallIntegerField()
    # Counts by task status: columns, so a recount is one small UPDATE.
    pending = models.PositiveSmallIntegerField(default=0)
    processing = models.PositiveSmallIntegerField(default=0)
    completed = models.PositiveSmallIntegerField(default=0)
    failed = models.PositiveSmallIntegerField(default=0)
    canceled = models.PositiveSmallIntegerField(default=0)
    # When the owner canceled the batch: only decides "canceled" over "completed" at the end.
    canceled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = BatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"
        indexes = [models.Index(fields=["user", "-created_at"], name="batch_user_recent_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="batch_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.status})"

    # --- What clients see --------------------------------------------------------------
    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTED}

    @property
    def progress(self) -> int:
        """Percent of the batch's tasks that are finished (whatever their outcome)."""
        done = self.completed + self.failed + self.canceled
        return 100 * done // self.total if self.total else 100

    def task_ids(self) -> list[int]:
        return list(self.tasks.order_by("id").values_list("id", flat=True))

    def live_state(self, *, with_tasks: bool = True, task_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """The batch JSON of docs/api.md; without ``tasks`` it is the ``data`` of its events."""
        state: dict[str, Any] = {
            "id": self.pk,
            "status": self.status,
            "counts": self.counts,
            "total": self.total,
            "progress": self.progress,
            "options": self.options,
            "client_ref": self.client_ref,
            "archive_url": reverse("batch-archive", args=[self.pk]),
            "created_at": _json_value(self.created_at),
            "finished_at": _json_value(self.finished_at),
            "updated_at": _json_value(self.updated_at),
        }
        if with_tasks:
            state["tasks"] = list(task_ids) if task_ids is not None else self.task_ids()
        return state

    # --- Creation ------------------------------------------------------------------------
    @classmethod
    def submit(
        cls,
        *,
        user: AbstractBaseUser,
        parts: Sequence[BatchPart],
        options: dict[str, Any],
        client_ref: str | None = None,
        idempotency_key: str | None = None,
        fingerprint: str = "",
    ) -> tuple[Batch, bool]:
        """Create the batch and one pending task per part, all or nothing: the files are
        written first (no transaction open), then every row in one transaction; if that
        fails, the files go. Returns ``(batch, created)``; a repeat of an idempotency key
        returns the first batch."""
        if idempotency_key:
            earlier = cls.objects.filter(user=user, idempotency_key=idempotency_key).first()
            if earlier is not None:
                return earlier, False
        if not 1 <= len(parts) <= MAX_BATCH_IMAGES:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH_IMAGES} photos, not {len(parts)}")
        now = timezone.now()
        batch = cls(user=user, options=options, client_ref=client_ref or None, idempotency_key=idempotency_key,
                    fingerprint=fingerprint, total=len(parts), pending=len(parts), created_at=now, updated_at=now)
        tasks = [
            GenerationTask(
                user=user, options=part.options, input_content_type=part.content_type if part.file else "",
                source_name=part.source_name[:255], priority=BATCH_PRIORITY, image_url=part.image_url,
                expires_at=now + timedelta(seconds=part.expires_in) if part.expires_in else None,
                max_attempts=settings.IMAGEGEN_MAX_ATTEMPTS, created_at=now, updated_at=now,
            )
            for part in parts
        ]
        try:
            for task, part in zip(tasks, parts):
                if part.file is not None:
                    task.input_image.save(part.file.name, part.file, save=False)
            with transaction.atomic():
                # Every photo of a batch counts against the daily quota, all or nothing.
                DailyUsage.count_task(user, now, tasks=len(tasks))
                # The batch first: its batch_update (all pending) precedes its tasks' task_created.
                batch.save()
                # Round-robin turns in the batch lane too (fair sharing between batch owners).
                GenerationTask.assign_turns(tasks)
                for task in tasks:
                    task.batch = batch
                    task.save()
                    log_transition(task, ("status",))
                _announce_work(deadline=any(task.expires_at is not None for task in tasks))
        except Exception:
            for task in tasks:
                if task.input_image:
                    task.input_image.delete(save=False)
            if idempotency_key:
                # Two identical requests raced: the other one's rows won.
                earlier = cls.objects.filter(user=user, idempotency_key=idempotency_key).first()
                if earlier is not None:
                    return earlier, False
            raise
        return batch, True

    # --- Counting (inside a task's transaction) -------------------------------------------
    @classmethod
    def locked(cls, batch_id: int) -> Batch:
        """The batch re-read under its row lock (inside the transaction of a task change)."""
        return cls.objects.select_for_update().get(pk=batch_id)

    @classmethod
    def lock_batches_of(cls, tasks: Iterable[GenerationTask]) -> None:
        """Lock the batches of ``tasks`` in id order, before a transaction that changes
        several tasks recounts them one by one (see the lock order above)."""
        ids = sorted({task.batch_id for task in tasks if task.batch_id is not None})
        if ids:
            list(cls.objects.select_for_update().filter(pk__in=ids).order_by("id").values_list("id", flat=True))

    def recount(self) -> None:
        """Count the batch's tasks as this transaction sees them (call on a ``locked``
        batch, after the task change): saves, and so records its events, only when a
        count moved."""
        rows = self.tasks.order_by().values_list("status").annotate(n=Count("id"))
        self._set_counts(dict.fromkeys(COUNTED, 0) | {status: n for status, n in rows})

    def count_move(self, old: str, new: str) -> None:
        """One of the batch's tasks went from ``old`` to ``new`` (call on a ``locked`` batch, after
        that task's event): the counts as they stand after it, without a query. A set-based change
        of several of its tasks (``set_transitions``) steps through them this way, so each task's
        event is followed by its own ``batch_update``, as when the tasks change one by one."""
        counts = self.counts
        counts[old] -= 1
        counts[new] += 1
        self._set_counts(counts)

    def _set_counts(self, counts: dict[str, int]) -> None:
        if counts == self.counts:
            return
        for name, value in counts.items():
            setattr(self, name, value)
        unfinished = counts["pending"] + counts["processing"]
        if unfinished == 0:
            status = self.Status.CANCELED if self.canceled_at and counts["canceled"] else self.Status.COMPLETED
        elif counts["pending"] == sum(counts.values()):
            status = self.Status.PENDING
        else:
            status = self.Status.PROCESSING
        fields = [*COUNTED, "updated_at"]
        self.updated_at = timezone.now()
        if status != self.status:
            # A status change into a finished one is the batch's completion (the receiver
            # then appends batch_complete); a task retried later reopens it.
            self.status = status
            self.finished_at = self.updated_at if status in self.FINISHED else None
            fields += ["status", "finished_at"]
        self.save(update_fields=fields)

    # --- Owner actions ---------------------------------------------------------------------
    def cancel(self) -> int:
        """Cancel every unfinished task of the batch, each in its own short transaction
        (with its event and the batch's). Returns how many were canceled; a batch with
        nothing left to cancel raises ``InvalidTransition``."""
        if self.pending + self.processing == 0:
            raise InvalidTransition(f"a {self.status} batch cannot be canceled")
        if self.canceled_at is None:
            # A marker, not a state clients see: the counts, and the status derived from
            # them, change with each task's own cancel below, each with its events.
            self.canceled_at = timezone.now()
            Batch.objects.filter(pk=self.pk, canceled_at__isnull=True).update(canceled_at=self.canceled_at)
        canceled = 0
        for task in self.tasks.filter(status__in=("pending", "processing")).order_by("id"):
            try:
                task.cancel()
            except InvalidTransition:  # it finished meanwhile: nothing to cancel
                continue
            canceled += 1
        self.refresh_from_db()
        return canceled

    def archive_tasks(self) -> list[GenerationTask]:
        """The batch's tasks in submission order, as its archive lists them."""
        return list(self.tasks.order_by("id").prefetch_related("outputs"))
