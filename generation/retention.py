"""Deleting finished tasks, their image files and old events.

Used by ``manage.py purge_tasks`` (by hand), the admin's delete action, and
every worker's retention thread (automatically, when due). Rules:

- only finished tasks (completed, failed, canceled) are ever deleted; the
  status is re-checked under the row lock, so a task retried meanwhile stays;
- a batch's tasks wait for their batch: they are due once the batch itself
  finished (every task of it finished) longer ago than the cutoff, so a batch
  goes as a whole, and its row goes in the transaction that deletes its last
  task. A batch that still has tasks (a purge of some statuses only, or tasks
  deleted one by one) keeps its row: its counts stay the outcome it had, and
  its ``tasks`` list what it still holds;
- rows go in small batches, each its own short transaction, so no long lock
  blocks the queue; a row file is deleted only after its row's delete commits
  (a rolled-back batch keeps its files);
- automatic runs happen at most every ``IMAGEGEN_RETENTION_INTERVAL_MINUTES``
  across the whole fleet, and only one process at a time runs one
  (``pg_try_advisory_lock`` on PostgreSQL, on the direct ``DATABASE_LISTEN_URL``
  session behind a pooler; on SQLite there is one process).
"""
from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import close_old_connections, connection, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.dispatch import Signal
from django.utils import timezone

from .metrics import RETENTION_DELETED
from .models import Batch, GenerationTask, QueueControl, TaskOutput, WorkerProcess

logger = logging.getLogger(__name__)

# The advisory-lock key every process contends for: "imgretn" as a 56-bit number.
LOCK_KEY = int.from_bytes(b"imgretn", "big")
_local_lock = threading.Lock()  # SQLite (no advisory locks): one process, so a process lock suffices

#: Sent when events older than ``older_than`` (at ``now``) are due to go, or with
#: ``dry_run`` to be counted; ``batch_size`` rows per statement. Each receiver returns
#: how many it deleted (or would delete). The event log is the realtime side's, so it
#: connects its purge here (``notifications.apps``); this module never imports it.
events_expired = Signal()


@dataclass
class PurgeResult:
    tasks: int = 0
    files: int = 0
    events: int = 0
    workers: int = 0
    batches: int = 0
    dry_run: bool = False
    skipped: str | None = None  # why an automatic run did nothing: "disabled", "not due", "locked"

    def __iadd__(self, other: PurgeResult) -> PurgeResult:
        self.tasks += other.tasks
        self.files += other.files
        self.events += other.events
        self.workers += other.workers
        self.batches += other.batches
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _delete_files(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # a missing or unwritable file must not stop the rest
            logger.warning("Could not delete stored file %s", name, exc_info=True)


@dataclass(frozen=True)
class _Deleted:
    ids: list[int]
    files: int = 0
    batches: int = 0


def _empty_batches(ids: Iterable[int]) -> Any:
    """The batches among ``ids`` that have no task left."""
    return Batch.objects.filter(pk__in=list(ids)).exclude(Exists(GenerationTask.objects.filter(batch=OuterRef("pk"))))


def _delete_locked(candidates: Any, *, limit: int | None, skip_locked: bool) -> _Deleted:
    """Lock and delete the finished tasks among ``candidates`` (up to ``limit``) in one
    transaction, and the batches this leaves empty; their files go once it commits."""
    with transaction.atomic():
        rows = (
            candidates.finished()
            # Only the task rows: the batch join of ``expired_tasks`` must not lock batches
            # here, before their tasks (the lock order of generation.models.batch).
            .select_for_update(skip_locked=skip_locked, of=("self",))
            .order_by("id")
            .values_list("id", "input_image", "result_image", "mask_image", "batch_id")
        )
        batch = list(rows[:limit] if limit else rows)
        if not batch:
            return _Deleted([])
        ids = [row[0] for row in batch]
        names = [name for row in batch for name in row[1:4] if name]
        # Every output's file too (the first output's is result_image: listed once).
        outputs = TaskOutput.objects.filter(task_id__in=ids).exclude(file="").values_list("file", flat=True)
        names = list(dict.fromkeys([*names, *outputs]))
        # A plain delete fires no post_save: deleting is not a state change, and the
        # owner's event log keeps its history until event retention removes it.
        GenerationTask.objects.filter(id__in=ids).delete()
        batch_ids = sorted({row[4] for row in batch if row[4] is not None})
        emptied = 0
        if batch_ids:
            # Task rows first, then their batches in id order: a task of one of them being
            # retried right now holds its batch until it commits, and then still counts.
            list(Batch.objects.select_for_update().filter(pk__in=batch_ids).order_by("id").values_list("id", flat=True))
            _, by_model = _empty_batches(batch_ids).delete()
            emptied = by_model.get(Batch._meta.label, 0)
        transaction.on_commit(partial(_delete_files, names))
    return _Deleted(ids, len(names), emptied)


def delete_tasks(ids: Iterable[int]) -> list[int]:
    """Delete these tasks and their files if they are finished (waits for row locks).
    Returns the ids actually deleted; active ones are left alone."""
    ids = list(ids)
    if not ids:
        return []
    deleted = _delete_locked(GenerationTask.objects.filter(id__in=ids), limit=None, skip_locked=False)
    RETENTION_DELETED.labels("tasks").inc(len(deleted.ids))
    return deleted.ids


def expired_tasks(older_than: timedelta, statuses: Iterable[str] | None = None, now: datetime | None = None) -> Any:
    """Finished tasks (of ``statuses``) that finished more than ``older_than`` ago; a
    batch's tasks only once their batch finished that long ago (they go together)."""
    finished = GenerationTask.FINISHED
    statuses = list(statuses or finished)
    bad = sorted(set(statuses) - set(finished))
    if bad:
        raise ValueError(f"only finished tasks can be purged ({', '.join(finished)}), not {', '.join(bad)}")
    cutoff = (now or timezone.now()) - older_than
    return GenerationTask.objects.filter(status__in=statuses).filter(
        Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, updated_at__lt=cutoff)
    ).filter(Q(batch__isnull=True) | Q(batch__status__in=Batch.FINISHED, batch__finished_at__lt=cutoff))


def _due_batches(older_than: timedelta, now: datetime | None, candidates: Any = None) -> Any:
    """Finished batches that finished more than ``older_than`` ago with no task left
    outside ``candidates`` (with None: no task left at all)."""
    cutoff = (now or timezone.now()) - older_than
    kept = GenerationTask.objects.filter(batch=OuterRef("pk"))
    if candidates is not None:
        kept = kept.exclude(pk__in=candidates.values("pk"))
    return Batch.objects.filter(status__in=Batch.FINISHED, finished_at__lt=cutoff).exclude(Exists(kept))


def purge_tasks(
    *,
    older_than: timedelta,
    statuses: Iterable[str] | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    should_stop: Callable[[], bool] | None = None,
    now: datetime | None = None,
) -> PurgeResult:
    """Delete expired finished tasks and their files, ``batch_size`` rows per transaction."""
    candidates = expired_tasks(older_than, statuses, now)
    batch_size = batch_size or settings.IMAGEGEN_RETENTION_BATCH_SIZE
    if dry_run:
        found = candidates.aggregate(
            tasks=Count("id"), inputs=Count("id", filter=~Q(input_image="")), results=Count("id", filter=~Q(result_image="")),
            masks=Count("id", filter=~Q(mask_image="")),
        )
        # Outputs after the first (the first's file is the result counted above).
        extra = TaskOutput.objects.filter(task__in=candidates, index__gt=0).exclude(file="").count()
        return PurgeResult(tasks=found["tasks"], files=found["inputs"] + found["results"] + found["masks"] + extra,
                           batches=_due_batches(older_than, now, candidates).count(), dry_run=True)
    result = PurgeResult()
    while True:
        # skip_locked: a row someone holds right now (a retry in flight) waits for the next run.
        deleted = _delete_locked(candidates, limit=batch_size, skip_locked=True)
        result.tasks += len(deleted.ids)
        result.files += deleted.files
        result.batches += deleted.batches
        if len(deleted.ids) < batch_size or (should_stop is not None and should_stop()):
            break
    # Batches left without tasks some other way (their tasks deleted in the admin, one
    # by one): nothing of them is left to show, so their rows go when they are due.
    with transaction.atomic():
        leftover = _due_batches(older_than, now)
        ids = list(leftover.select_for_update(skip_locked=True).order_by("id").values_list("id", flat=True))
        if ids:
            _, by_model = _empty_batches(ids).delete()
            result.batches += by_model.get(Batch._meta.label, 0)
    RETENTION_DELETED.labels("tasks").inc(result.tasks)
    RETENTION_DELETED.labels("batches").inc(result.batches)
    return result


def purge_events(*, older_than: timedelta, dry_run: bool = False, now: datetime | None = None) -> int:
    """Delete (or count) events older than ``older_than``, through the receivers of
    ``events_expired`` (the realtime side's own purge). Events are removed by age only,
    never by task: each user's log stays a gapless suffix, which clients detect as
    ``recovered: false`` when they asked for older ones."""
    answers = events_expired.send(
        sender=None, older_than=older_than, dry_run=dry_run, now=now or timezone.now(),
        batch_size=settings.IMAGEGEN_RETENTION_BATCH_SIZE,
    )
    deleted = sum(int(count) for _, count in answers)
    if not dry_run:
        RETENTION_DELETED.labels("events").inc(deleted)
    return deleted


def purge_workers(*, older_than: timedelta, dry_run: bool = False, now: datetime | None = None) -> int:
    """Worker rows (one per process start) silent for ``older_than`` that no task still names."""
    stale = WorkerProcess.objects.filter(last_heartbeat__lt=(now or timezone.now()) - older_than, tasks__isnull=True)
    if dry_run:
        return stale.count()
    deleted, _ = WorkerProcess.objects.filter(pk__in=list(stale.values_list("pk", flat=True)[:1000])).delete()
    return deleted


@contextmanager
def retention_lock() -> Iterator[bool]:
    """Yields True if this process may run retention now. Session-level on PostgreSQL:
    it is held across the batches' transactions, and a dead connection releases it."""
    if connection.vendor != "postgresql":
        acquired = _local_lock.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                _local_lock.release()
        return
    if settings.DATABASE_LISTEN_URL:
        # Behind a transaction-mode pooler a session lock taken through it would stay with
        # whichever server connection ran that statement (and the unlock go to another):
        # hold it on a direct session instead, released when that session closes.
        import psycopg

        with psycopg.connect(settings.DATABASE_LISTEN_URL, autocommit=True) as direct:
            row = direct.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()
            yield bool(row and row[0])
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


def _due(now: datetime) -> bool:
    ran_at = QueueControl.objects.filter(pk=1).values_list("retention_ran_at", flat=True).first()
    return ran_at is None or now - ran_at >= timedelta(minutes=settings.IMAGEGEN_RETENTION_INTERVAL_MINUTES)


def run_retention(
    *, now: datetime | None = None, force: bool = False, should_stop: Callable[[], bool] | None = None
) -> PurgeResult:
    """One automatic run, if it is due and no other process is running one."""
    now = now or timezone.now()
    task_days = settings.IMAGEGEN_TASK_RETENTION_DAYS
    event_seconds = settings.IMAGEGEN_EVENT_RETENTION_SECONDS
    worker_days = settings.IMAGEGEN_WORKER_RETENTION_DAYS
    if not (task_days or event_seconds or worker_days):
        return PurgeResult(skipped="disabled")
    if not force and not _due(now):  # cheap unlocked check first: most calls stop here
        return PurgeResult(skipped="not due")
    with retention_lock() as acquired:
        if not acquired:
            return PurgeResult(skipped="locked")
        if not force and not _due(now):  # another process finished a run while we waited
            return PurgeResult(skipped="not due")
        # Stamped first: a run that keeps crashing is retried each interval, not in a loop.
        QueueControl.get()
        QueueControl.objects.filter(pk=1).update(retention_ran_at=now)
        result = PurgeResult()
        if task_days:
            result += purge_tasks(older_than=timedelta(days=task_days), should_stop=should_stop, now=now)
        if event_seconds:
            result.events += purge_events(older_than=timedelta(seconds=event_seconds), now=now)
        if worker_days:
            result.workers += purge_workers(older_than=timedelta(days=worker_days), now=now)
    if result.tasks or result.events or result.workers or result.batches:
        logger.info(
            "Retention deleted %d tasks, %d files, %d batches, %d events, %d worker rows",
            result.tasks, result.files, result.batches, result.events, result.workers,
            extra={"event": "retention", **result.as_dict()},
        )
    return result


def retention_loop(halted: threading.Event, check_seconds: float | None = None) -> None:
    """A worker's retention thread: check every ``check_seconds`` whether a run is due."""
    check = check_seconds or settings.IMAGEGEN_RETENTION_CHECK_SECONDS
    delay = random.uniform(0, check)  # a fleet restarted at once does not check in lockstep
    try:
        while not halted.wait(delay):
            delay = check
            close_old_connections()
            try:
                run_retention(should_stop=halted.is_set)
            except Exception:
                logger.exception("Retention run failed; trying again at the next check")
    finally:
        connection.close()
