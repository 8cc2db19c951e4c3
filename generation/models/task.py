"""The generation queue: ``GenerationTask`` rows and the ``WorkerProcess`` rows that run them.

The row is the single source of truth for a task's state. Every state change
is a method here that opens its own short transaction, re-reads the row under
a lock, checks the allowed source states and saves. Views, the worker and the
admin never assign ``status`` themselves. Each save fires the one
``post_save`` receiver (``notifications.signals``) that appends the task's
event in the same transaction, so state fields must never be changed with
``QuerySet.update()``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Q
from django.db.models.fields.files import FieldFile
from django.utils import timezone

from .. import wakeup
from ..errors import ErrorCode
from ..new_files import store_new
from . import claiming, creation, set_transitions
from .claiming import RUNNING_CAP_LOCK
from .memo import memoized
from .output import OutputRecord, TaskOutput
from .transition_log import log_transition
from .links import task_url, task_url_maker
from .usage import DailyUsage
from .worker import WorkerProcess, alive_until

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)


class InvalidTransition(Exception):
    """The task is not in a state that allows this change."""


class IdempotencyKeyReused(Exception):
    """The caller's Idempotency-Key already made a task from another input or other options."""

    def __init__(self, task: GenerationTask) -> None:
        super().__init__(f"Idempotency-Key already used for task {task.pk} with another file or other options")
        self.task = task


class LostClaim(InvalidTransition):
    """The caller's claim is no longer valid: the task was canceled, or taken
    back by another worker after this one was presumed dead. The caller must
    stop and discard its work."""


def _image_path(prefix: str, extension: str) -> str:
    # Unguessable and never derived from the client's filename.
    now = timezone.now()
    return f"{prefix}/{now:%Y/%m/%d}/{uuid.uuid4().hex}.{extension}"


def _store_new(file: FieldFile, instance: GenerationTask, content: Any) -> str:
    """Write ``content`` as a new file of ``file``'s field and return the name it was stored
    under, by the worker's writer of new files (``new_files.store_new``: no ``exists()`` probe,
    since ``upload_to`` names carry a uuid4; on local disk a few system calls that still refuse
    to overwrite, where ``FileSystemStorage._save`` took 0.5-0.6 ms of every submit)."""
    return store_new(file.field.generate_filename(instance, content.name), content, file.storage)


def input_upload_to(instance: GenerationTask, filename: str) -> str:
    return _image_path("inputs", filename.rsplit(".", 1)[-1].lower())


def result_upload_to(instance: GenerationTask, filename: str) -> str:
    return _image_path("results", filename.rsplit(".", 1)[-1].lower())


def mask_upload_to(instance: GenerationTask, filename: str) -> str:
    return _image_path("masks", filename.rsplit(".", 1)[-1].lower())


@dataclass(frozen=True)
class Completion:
    """What a finished run stored and what the completing transition records with it."""

    result_name: str
    content_type: str
    compliance: dict | None = None
    #: Stored name of the product mask (8-bit greyscale PNG at input resolution), "" when the backend gave none.
    mask_name: str = ""
    #: Provenance: {"backend", "segmenter", "model", "model_sha256", "version"}, or None when the backend gave none.
    engine: dict[str, Any] | None = None
    needs_review: bool = False
    #: Every output in the job's order (the first is ``result_name``); empty: none recorded
    #: (a completion built by hand), the task then lists its result as its one output.
    outputs: tuple[OutputRecord, ...] = ()


class TaskQuerySet(models.QuerySet["GenerationTask"]):
    def for_user(self, user: AbstractBaseUser) -> TaskQuerySet:
        return self.filter(user=user)

    def pending(self) -> TaskQuerySet:
        return self.filter(status=GenerationTask.Status.PENDING)

    def claimed_by(self, worker: WorkerProcess) -> TaskQuerySet:
        """The tasks ``worker`` holds claimed now (processing under its claim)."""
        return self.filter(status=GenerationTask.Status.PROCESSING, worker=worker)

    def claimable(self, now: datetime | None = None) -> TaskQuerySet:
        now = now or timezone.now()
        # An expired task is never started, even before a sweeper has marked it (intake: expires_in).
        return self.pending().filter(run_after__lte=now).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))

    def expired(self, now: datetime | None = None) -> TaskQuerySet:
        """Pending tasks whose ``expires_at`` has passed (they are never claimed; ``expire_due`` ends them)."""
        return self.pending().filter(expires_at__lte=now or timezone.now())

    def next_run_after(self) -> datetime | None:
        """The earliest ``run_after`` among these rows (None when there are none)."""
        return self.aggregate(next=models.Min("run_after"))["next"]

    def finished(self) -> TaskQuerySet:
        return self.filter(status__in=GenerationTask.FINISHED)

    def in_claim_order(self) -> TaskQuerySet:
        """Highest priority first; within a priority by turn (round-robin across users, see
        ``GenerationTask.next_turn``), then in submit order."""
        return self.order_by("-priority", "turn", "id")

    def ahead_of(self, task: GenerationTask) -> TaskQuerySet:
        """The rows before ``task`` in claim order."""
        p, turn = task.priority, task.turn
        return self.filter(
            Q(priority__gt=p) | Q(priority=p, turn__lt=turn) | Q(priority=p, turn=turn, id__lt=task.pk)
        )

    def over_running_cap(self, cap: int) -> models.QuerySet:
        """Ids of the users with ``cap`` or more processing tasks."""
        return (
            self.filter(status=GenerationTask.Status.PROCESSING)
            .values("user_id").annotate(n=models.Count("id")).filter(n__gte=cap).values("user_id")
        )

    def claimable_locked(self, limit: int = 1, exclude: Collection[int] = (), now: datetime | None = None) -> TaskQuerySet:
        """The query that locks up to ``limit`` claimable rows, skipping rows other workers hold,
        users at ``IMAGEGEN_MAX_RUNNING_PER_USER`` (as last committed: ``claim_next`` re-checks
        under a per-user lock) and the ids in ``exclude`` (tasks the caller is still running an
        earlier attempt of). Run it inside a transaction and keep that short: the rows stay
        locked until commit."""
        rows = self.claimable(now)
        if exclude:
            rows = rows.exclude(pk__in=list(exclude))
        cap = settings.IMAGEGEN_MAX_RUNNING_PER_USER
        if cap:
            rows = rows.exclude(user_id__in=GenerationTask.objects.over_running_cap(cap))
        return rows.in_claim_order().select_for_update(skip_locked=True, of=("self",))[:limit]

    def lock_claimable(self, limit: int = 1, exclude: Collection[int] = ()) -> list[GenerationTask]:
        """Lock and read the rows of ``claimable_locked``."""
        return list(self.claimable_locked(limit, exclude))

    def typical_run_seconds(self, sample: int = 50) -> float | None:
        """The typical run time of a task, claim to finish: the median over the ``sample``
        most recently completed (None before any). The one definition ETAs use."""
        rows = list(
            self.filter(status=GenerationTask.Status.COMPLETED, started_at__isnull=False)
            .order_by("-finished_at")
            .values_list("started_at", "finished_at")[:sample]
        )
        durations = sorted((end - start).total_seconds() for start, end in rows if end)
        return durations[len(durations) // 2] if durations else None

    def orphaned(self, timeout: float | None = None) -> TaskQuerySet:
        """Processing tasks whose worker is gone, has stopped, or has been silent for longer than
        the heartbeat timeout it declared (``timeout``: an operator's explicit override)."""
        now = timezone.now()
        if timeout is not None:
            silent = Q(worker__last_heartbeat__lt=now - timedelta(seconds=timeout))
        else:
            silent = Q(worker_alive_until__lt=now)
        return (
            self.filter(status=GenerationTask.Status.PROCESSING)
            .alias(worker_alive_until=alive_until("worker__"))
            .filter(Q(worker__isnull=True) | silent | Q(worker__stopped_at__isnull=False))
        )


class GenerationTask(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELED = "canceled"

    #: The end states: no worker will touch the task again (only ``retry`` revives it).
    FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELED)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_tasks")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    options = models.JSONField(default=dict, blank=True)
    # Empty for an ``image_url`` task until a worker has fetched the photo (intake).
    input_image = models.FileField(upload_to=input_upload_to, max_length=255, blank=True)
    input_content_type = models.CharField(max_length=50, blank=True)
    result_image = models.FileField(upload_to=result_upload_to, max_length=255, blank=True)
    result_content_type = models.CharField(max_length=50, blank=True)
    compliance = models.JSONField(null=True, blank=True)
    mask_image = models.FileField(upload_to=mask_upload_to, max_length=255, blank=True)
    # The engine's own verdict that a person should look at the cut-out (copied from the
    # compliance report so the list can filter on it with an index).
    needs_review = models.BooleanField(default=False, db_index=True)
    # The task's round in its priority's round-robin across users (``next_turn``): claims go by
    # priority, then turn, then id, so one user's long queue does not hold back another's task.
    turn = models.BigIntegerField(default=0)
    # Which backend, segmenter, model file (and its checksum) and engine version made the result.
    engine = models.JSONField(null=True, blank=True)
    error_code = models.CharField(max_length=64, null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    priority = models.SmallIntegerField(default=0)
    run_after = models.DateTimeField(default=timezone.now)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    # --- intake options: client_ref, expires_in, image_url, idempotency reuse ---
    # The caller's own reference (a SKU), echoed in the task JSON and every event.
    client_ref = models.CharField(max_length=200, null=True, blank=True)
    # Not started by then: the task ends canceled with error_code "expired".
    expires_at = models.DateTimeField(null=True, blank=True)
    # Where a worker fetches the photo from, instead of an upload.
    image_url = models.URLField(max_length=2048, null=True, blank=True)
    # sha256 of the input (its bytes, or its URL) and the canonical options: an
    # Idempotency-Key repeated with another fingerprint is refused. Empty on older rows.
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    # The claim: which worker holds the task and the token every later write must present.
    worker = models.ForeignKey(WorkerProcess, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    # Batches: the batch a task was submitted in (null for single submissions), and the
    # client's file name of the upload, only ever used to name the batch archive's entries.
    batch = models.ForeignKey("generation.Batch", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    source_name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Serves the claim query (pending; highest priority, then turn, then id) and queue_position.
            models.Index(fields=["-priority", "turn", "id"], condition=Q(status="pending"), name="task_claim_turn_idx"),
            # A user's last pending turn in a priority (next_turn) and a user's processing count
            # (the running cap). Deliberately not a partial index on status='pending': a second
            # one beside the claim index let the planner, on stale statistics after a bulk
            # insert, claim through it and sort the whole queue (measured: 11 ms a claim at
            # 1,600 pending instead of a few index rows).
            models.Index(fields=["user", "status", "priority", "turn"], name="task_user_status_turn_idx"),
            # The few processing rows: the round-robin's current turn (next_turn).
            models.Index(fields=["priority", "turn"], condition=Q(status="processing"), name="task_processing_idx"),
            models.Index(fields=["user", "-created_at"], name="task_user_recent_idx"),
            models.Index(fields=["status", "finished_at"], name="task_status_finished_idx"),
            # intake: ?client_ref= on the list, and the expiry sweeper's next deadline.
            models.Index(fields=["user", "client_ref"], condition=Q(client_ref__isnull=False),
                         name="task_user_client_ref_idx"),
            models.Index(fields=["expires_at"], condition=Q(status="pending", expires_at__isnull=False),
                         name="task_expiry_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="task_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.status})"

    # --- Derived values -------------------------------------------------------------
    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def elapsed_time(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.is_finished and self.finished_at else timezone.now()
        return round(max((end - self.started_at).total_seconds(), 0.0), 3)

    def queue_position(self) -> int | None:
        """1-based place among pending tasks in claim order (priority, then round-robin turn,
        then submit order); None unless pending. One COUNT over the claim index, as cheap as
        the FIFO count it replaces. It can grow: another user's new task joins the current
        round, ahead of this user's later rounds."""
        if self.status != self.Status.PENDING:
            return None
        return GenerationTask.objects.pending().ahead_of(self).count() + 1

    def estimated_remaining_seconds(self, position: int | None = None) -> int | None:
        typical = self.typical_seconds()
        if self.is_finished:
            return None
        waiting = self.waiting_seconds()
        if typical is None:
            return int(round(waiting)) if waiting else None  # the wait at least is known
        if self.status == self.Status.PROCESSING:
            return max(int(round(typical - (self.elapsed_time or 0.0))), 0)
        position = position if position is not None else self.queue_position()
        if position is None:
            return None
        return self.queued_eta(position, typical, self.eta_workers(), waiting)

    @staticmethod
    def typical_seconds() -> float | None:
        # Read for every task event and listing: a 10 s old value will do.
        return memoized("typical_run_seconds", 10.0, GenerationTask.objects.typical_run_seconds)

    def waiting_seconds(self) -> float:
        """How long a pending task still waits for its run_after (a retry's backoff, the fleet's
        Gemini rate): it starts no earlier than that, whatever its place in the queue."""
        if self.status == self.Status.PENDING and self.run_after:
            return max((self.run_after - timezone.now()).total_seconds(), 0.0)
        return 0.0

    @staticmethod
    def eta_workers() -> int:
        """The worker capacity a pending task's ETA divides its queue by (a 10 s old figure)."""
        return max(memoized("live_capacity", 10.0, WorkerProcess.objects.live_capacity), 1)

    @staticmethod
    def queued_eta(position: int, typical: float, workers: int, waiting: float) -> int:
        """A pending task's ETA at ``position``: its queue shared by ``workers``, and no
        earlier than its ``run_after`` (``waiting`` seconds) plus one run. The one-statement
        submit (``creation.QUEUED_ETA_SQL``) computes the same in SQL, with the same float
        operations in the same order, since only the statement knows the position."""
        queued = typical * (1 + (position - 1) / workers)
        return int(round(max(queued, waiting + typical)))

    def get_result_url(self, url: Callable[[str, int], str] = task_url) -> str | None:
        if self.status != self.Status.COMPLETED or not self.result_image:
            return None
        return url("task-result", self.pk)

    def get_mask_url(self, url: Callable[[str, int], str] = task_url) -> str | None:
        if self.status != self.Status.COMPLETED or not self.mask_image:
            return None
        return url("task-mask", self.pk)

    def get_input_url(self, url: Callable[[str, int], str] = task_url) -> str | None:
        # An image_url task has no input until a worker has fetched it.
        if not self.input_image:
            return None
        return url("task-input", self.pk)

    #: What clients see of a task, in this order: ``live_state()``. A new field of the
    #: task JSON is added here only (a computed one also to ``live_state``'s ``derived``);
    #: the REST serializer, its schema and every event's ``data`` follow.
    LIVE_FIELDS = (
        "id", "status", "progress", "queue_position", "attempts", "error_message", "error_code",
        "options", "input_image_url", "result_image_url", "created_at", "started_at", "finished_at",
        "updated_at", "elapsed_time", "estimated_remaining_seconds", "compliance", "needs_review", "engine",
        "outputs",
        "client_ref", "expires_at", "image_url",  # intake
        "batch",
    )

    def live_state(self, *, tz: Any = None, url: Callable[[str, int], str] | None = None) -> dict[str, Any]:
        """The task as clients see it, JSON-ready: the body of ``GET /api/tasks/{id}/`` and the
        ``data`` of the event its change appends (docs/realtime.md), so a client that replays
        the events holds exactly what the REST API would answer.

        For an event this runs inside the change's transaction, under the row lock (the
        user's event counter is locked only by the insert that follows, or by an earlier
        task's event in a batch such as ``rescue_orphans``), so the queue
        position and the ETA built on it describe the very state recorded. Only a change
        into ``pending`` pays for the position, one COUNT over the pending index reused by
        the ETA. Measured (bench/bench_snapshot.py, docs/benchmarks/snapshot.md; medians on
        a shared 2-core machine): the COUNT takes 2 ms with 1,000 tasks ahead, 6 ms with
        10,000 and 19 ms with 50,000, against 13-16 ms for a cancel + retry round without
        it (about three times all of these at a load average of 11). Kept inside: after
        commit it could only reach the stored event through a second write of the row,
        and replayed events would otherwise lack what the REST body has.
        """
        created = self.__dict__.pop("_created_state", None)
        if created is not None:  # just made by the one-statement submit: the answer to its POST
            return created
        return self.render_state(self.queue_position(), tz=tz, url=url)

    def render_state(self, position: int | None, *, tz: Any = None,
                     url: Callable[[str, int], str] | None = None) -> dict[str, Any]:
        """``live_state()`` with the queue position already known (the one-statement submit
        renders the created task before the database has given it an id and a position)."""
        url = url or task_url_maker()
        derived = {
            "queue_position": position,
            "estimated_remaining_seconds": self.estimated_remaining_seconds(position),
            "input_image_url": self.get_input_url(url),
            "result_image_url": self.get_result_url(url),
            "batch": self.batch_id,
            "outputs": [output.as_json(url) for output in self.rendered_outputs()],
        }
        tz = tz or timezone.get_current_timezone()  # once, not per timestamp (a context-local lookup each)
        state = {}
        for name in self.LIVE_FIELDS:
            value = derived[name] if name in derived else getattr(self, name)
            # Only datetimes need converting: no call for the other values (twice per task in a drain).
            state[name] = _json_value(value, tz) if isinstance(value, datetime) else value
        return state

    @staticmethod
    def live_states(tasks: Collection[GenerationTask]) -> list[dict[str, Any]]:
        """``live_state()`` of each of ``tasks``, the context-local lookups made once for all
        (a worker's batch of events: they were a third of rendering one)."""
        tz, url = timezone.get_current_timezone(), task_url_maker()
        return [task.live_state(tz=tz, url=url) for task in tasks]

    # --- Outputs --------------------------------------------------------------------------
    def rendered_outputs(self) -> list[TaskOutput]:
        """The completed task's outputs in order (the first is ``result_image``), each with its
        ``name``, ``preset``, ``format``, ``file``, ``content_type``, ``compliance``; empty
        unless completed. One query, none after ``prefetch_related("outputs")`` or right
        after completing. A task completed before outputs were recorded lists its result
        as its one (unsaved) output."""
        if self.status != self.Status.COMPLETED:
            return []
        cached: list[TaskOutput] | None = getattr(self, "_outputs_cache", None)
        if cached is None:
            cached = list(self.outputs.all())
            if not cached and self.result_image:
                cached = [self._result_as_output()]
            self._outputs_cache = cached
        return cached

    def output(self, wanted: str | None) -> TaskOutput | None:
        """The output called ``wanted`` or at index ``wanted`` (0 is the first); None (or "") is the first."""
        outputs = self.rendered_outputs()
        if not wanted:
            return outputs[0] if outputs else None
        for output in outputs:
            if output.name == wanted:
                return output
        # Names are never all digits, so a number is an index.
        if wanted.isdigit() and int(wanted) < len(outputs):
            return outputs[int(wanted)]
        return None

    def _result_as_output(self) -> TaskOutput:
        checks = (self.compliance or {}).get("checks") or {}
        size = (checks.get("dimensions") or {}).get("value") or [0, 0]
        preset = str((self.options or {}).get("preset") or (self.compliance or {}).get("preset") or "")
        out = TaskOutput(
            task=self, index=0, name=preset or "output-0", preset=preset,
            format=self.result_content_type.removeprefix("image/"), width=size[0], height=size[1],
            bytes=(checks.get("bytes") or {}).get("value") or 0, content_type=self.result_content_type,
            compliance=self.compliance,
        )
        out.file.name = self.result_image.name
        return out

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.pop("_outputs_cache", None)
        self.__dict__.pop("_created_state", None)
        super().refresh_from_db(*args, **kwargs)

    # --- Fair sharing ------------------------------------------------------------------------
    @classmethod
    def next_turn(cls, user_id: int, priority: int, *, announce: bool = False, deadline: bool = False) -> int:
        """The turn a new task of this user joins at this priority: one after the user's last
        pending task, but never before the round being served now (the highest turn
        processing; with nothing processing, the lowest turn waiting). So a user with 5,000
        tasks queued holds turns far ahead, and another user's single task joins the current
        round: it is claimed within one round, not after the 5,000 (start-time fair queueing
        with one unit per task). Three index reads in one statement; concurrent submits of
        one user may share a turn, which only orders them by id.

        ``announce``: the caller queues work in this transaction; on PostgreSQL its NOTIFY
        rides in the same statement (it is delivered at commit wherever it is issued), one
        round trip fewer (``deadline``: the work carries an ``expires_at``). The caller still calls
        ``_announce_work(notified=True)``."""
        reads, params = cls._turn_reads(user_id, priority, announce=announce, deadline=deadline)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {reads}", params)
            return cls._turn_from(*cursor.fetchone()[:3])

    @classmethod
    def _turn_reads(cls, user_id: int, priority: int, *, announce: bool,
                    deadline: bool = False) -> tuple[str, list[Any]]:
        """``next_turn``'s reads as three scalar subqueries (and the NOTIFY), for any statement to carry."""
        table = connection.ops.quote_name(cls._meta.db_table)
        # The statuses as literals, not parameters: only then can a prepared statement's generic
        # plan use the partial indexes on ``status = 'pending'`` / ``'processing'`` (creation._run).
        literal = creation.status_literal
        pending, processing = literal(cls.Status.PENDING), literal(cls.Status.PROCESSING)
        notify = announce and connection.vendor == "postgresql"
        sql = (
            # The user's last pending turn: the pending status here a parameter, so that the claim
            # index (partial, on pending) cannot serve it and the user's index must, one entry from
            # its end (ORDER BY ... LIMIT 1: a MAX() there still aggregated all of the user's
            # pending tasks). Through the claim index, which the prepared statement's generic plan
            # chose (it cannot know that the user is rare), the read walked every pending task of
            # the priority: 1.9 ms to find none of a user with nothing queued behind another
            # seller's 4,600, and 8.7 ms for that seller's own next submit (EXPLAIN ANALYZE).
            f"(SELECT turn FROM {table} WHERE user_id = %s AND status = %s AND priority = %s "
            "AND turn IS NOT NULL ORDER BY turn DESC LIMIT 1), "
            f"(SELECT MAX(turn) FROM {table} WHERE priority = %s AND status = {processing}), "
            f"(SELECT MIN(turn) FROM {table} WHERE priority = %s AND status = {pending})"
            + (", pg_notify(%s, %s)" if notify else "")
        )
        payload = wakeup.DEADLINE if deadline else ""
        return sql, [user_id, cls.Status.PENDING, priority, priority, priority,
                     *([wakeup.CHANNEL, payload] if notify else [])]

    @staticmethod
    def _turn_from(last: int | None, serving: int | None, lowest: int | None) -> int:
        if serving is None:
            serving = lowest or 0
        return serving if last is None else max(last + 1, serving)

    @classmethod
    def assign_turns(cls, tasks: list[GenerationTask]) -> None:
        """Give unsaved tasks their turns, in list order (for code that creates many at once
        with ``bulk_create``; ``submit`` does it itself). Call in the creating transaction."""
        following: dict[tuple[int, int], int] = {}
        for task in tasks:
            key = (task.user_id, task.priority)
            task.turn = following[key] if key in following else cls.next_turn(*key)
            following[key] = task.turn + 1

    # --- Creation ------------------------------------------------------------------------
    @classmethod
    def submit(
        cls,
        *,
        user: AbstractBaseUser,
        image: Any | None,
        content_type: str,
        options: dict[str, Any],
        idempotency_key: str | None = None,
        priority: int = 0,
        client_ref: str | None = None,
        expires_in: int | None = None,
        image_url: str | None = None,
        fingerprint: str = "",
    ) -> tuple[GenerationTask, bool]:
        """Create a pending task, or return the caller's earlier task with the same
        idempotency key. Returns ``(task, created)``. ``image`` is None for an
        ``image_url`` task (a worker fetches it). Raises ``IdempotencyKeyReused``
        when the earlier task was made from another input or other options, and
        ``QuotaExceeded`` when the user's daily task quota is spent (a repeat of an
        earlier key is not a new task)."""
        if idempotency_key:
            existing = cls.objects.filter(user=user, idempotency_key=idempotency_key).first()
            if existing is not None:
                return existing._same_request(fingerprint), False
        now = timezone.now()
        DailyUsage.check_quota(user, now)  # cheap refusal before the upload is stored
        task = cls(
            user=user,
            options=options,
            input_content_type=content_type if image is not None else "",
            idempotency_key=idempotency_key or None,
            priority=priority,
            max_attempts=settings.IMAGEGEN_MAX_ATTEMPTS,
            client_ref=client_ref or None,
            expires_at=now + timedelta(seconds=expires_in) if expires_in else None,
            image_url=image_url or None,
            request_fingerprint=fingerprint,
            created_at=now,
        )
        # The file is written before the row: a failure here leaves no row, and a
        # failure of the insert below removes the file.
        if image is not None:
            task.input_image = _store_new(task.input_image, task, image)
        try:
            # One statement on PostgreSQL (``creation``); the transactional path below when it
            # wrote nothing (a spent quota, a racing submit of the same user) and elsewhere.
            if connection.vendor == "postgresql" and creation.create(task, now):
                _announce_work(notified=True, deadline=task.expires_at is not None)
                log_transition(task, ("status",))
                return task, True
            with transaction.atomic():
                # Counted (and the user's counter row locked) in the insert's transaction:
                # concurrent submits of one user cannot overshoot the quota.
                # The turn reads and the NOTIFY ride in the count's statement: one round trip for all.
                # (Its reads keep the statement's snapshot: a submit of the same user that held the
                # counter row may be unseen and share our turn, which only orders the two by id.)
                deadline = task.expires_at is not None
                reads, params = cls._turn_reads(task.user_id, priority, announce=True, deadline=deadline)
                task.turn = cls._turn_from(*DailyUsage.count_task(user, now, also=reads, also_params=params)[:3])
                task.save()
                _announce_work(notified=True, deadline=deadline)
                log_transition(task, ("status",))
        except Exception:
            if image is not None:
                task.input_image.delete(save=False)
            if idempotency_key:
                # Two identical requests raced: the other one's row won.
                existing = cls.objects.filter(user=user, idempotency_key=idempotency_key).first()
                if existing is not None:
                    return existing._same_request(fingerprint), False
            raise
        return task, True

    def _same_request(self, fingerprint: str) -> GenerationTask:
        # Rows from before fingerprints were stored match any repeat, as they always did.
        if self.request_fingerprint and fingerprint and self.request_fingerprint != fingerprint:
            raise IdempotencyKeyReused(self)
        return self

    @staticmethod
    def fingerprint(input_digest: str, **request: Any) -> str:
        """The fingerprint of a submission: sha256 over the input's digest (of its bytes,
        or of its URL) and the canonical JSON of everything else that shapes the task."""
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(f"{input_digest}\n{canonical}".encode()).hexdigest()

    # --- Transitions ------------------------------------------------------------------------
    def _lock(self) -> None:
        """Re-read this row under a row lock (call inside ``transaction.atomic``)."""
        self._take(GenerationTask.objects.select_for_update().get(pk=self.pk))

    def _take(self, fresh: GenerationTask) -> None:
        """Hold ``fresh``'s values (this row as just read or written) from now on."""
        for field in self._meta.concrete_fields:
            setattr(self, field.attname, getattr(fresh, field.attname))
        self.__dict__.pop("_outputs_cache", None)
        self.__dict__.pop("_created_state", None)
        if "_outputs_cache" in fresh.__dict__:
            self._outputs_cache = fresh._outputs_cache

    def _save(self, *fields: str) -> None:
        # A batch task's status change recounts its batch in this same transaction
        # (generation.models.batch). The batch row is locked before the task's event takes
        # the owner's event counter: every transaction takes task, batch, counter in that order.
        recount = self.batch_id is not None and "status" in fields
        batch = type(self).batch.field.related_model.locked(self.batch_id) if recount else None
        self.updated_at = timezone.now()
        self.__dict__.pop("_created_state", None)
        self.save(update_fields=[*fields, "updated_at"])
        log_transition(self, fields)
        if batch is not None:
            batch.recount()

    def _check_claim(self, token: uuid.UUID) -> None:
        if self.status != self.Status.PROCESSING or self.claim_token != token:
            raise LostClaim(f"task {self.pk} is {self.status}; claim {token} no longer holds")

    def claim(self, worker: WorkerProcess) -> uuid.UUID:
        """Take a pending row this transaction has locked (see ``lock_claimable``)."""
        if self.status != self.Status.PENDING:
            raise InvalidTransition(f"cannot claim a {self.status} task")
        now = timezone.now()
        self.status = self.Status.PROCESSING
        self.worker = worker
        self.claim_token = uuid.uuid4()
        self.attempts += 1
        self.progress = 0
        self.started_at = now
        self.finished_at = None
        self._save("status", "worker", "claim_token", "attempts", "progress", "started_at", "finished_at")
        return self.claim_token

    @classmethod
    def claim_next(
        cls, worker: WorkerProcess, limit: int = 1, exclude: Collection[int] = ()
    ) -> list[tuple[GenerationTask, uuid.UUID]]:
        """Claim up to ``limit`` tasks (none of the ids in ``exclude``) in one short transaction;
        generation runs after it commits. Outside a transaction on PostgreSQL that is one
        statement in autocommit that picks, locks and claims the rows and appends their events
        (``claiming``: one round trip, one commit; under a running cap two statements and a
        commit). Otherwise, and whenever that statement does not apply (a batch task picked),
        the rows are picked, locked and claimed (each with a token of its own) by one statement,
        their events appended by one more (``set_transitions``); under a running cap the picked
        rows are first read and re-checked per user (``_within_running_cap``), then claimed the
        same way."""
        claimed = claiming.claim(cls, worker, limit, exclude)  # one statement, where it applies
        if claimed is not None:
            return claimed
        with transaction.atomic():
            if settings.IMAGEGEN_MAX_RUNNING_PER_USER:
                kept = [t.pk for t in cls._within_running_cap(cls.objects.lock_claimable(limit, exclude))]
                if not kept:
                    return []
                picked = set_transitions.picked_ids(cls.objects.filter(pk__in=kept))
            else:
                picked = set_transitions.claimable_ids(cls, limit, exclude)
            return set_transitions.claim_rows(cls, worker, picked)

    @classmethod
    def _within_running_cap(cls, tasks: list[GenerationTask]) -> list[GenerationTask]:
        """The locked ``tasks`` that fit under IMAGEGEN_MAX_RUNNING_PER_USER. The filter in
        ``lock_claimable`` read the running counts without a lock: two workers claiming at once
        could both see room for the same user's last slot. Here the counts are read again after
        taking a transaction lock per user (all in one statement, in user order, so claims cannot
        deadlock), so the second claim waits for the first to commit and sees its tasks. One
        statement for the locks and one for the counts, whatever the number of users (a claim in
        fair order spans up to ``limit`` users). The counts are a statement of their own because a
        statement's snapshot is taken when it starts: counted in the locking statement, a count
        could predate the commit the lock waited for. This is the transactional claim's check (in
        a caller's transaction, on SQLite, for batch tasks); outside a transaction on PostgreSQL
        ``claiming._claim_capped`` does the same in the claim statement. SQLite runs one write
        transaction at a time, so the plain count is already serialised there."""
        cap = settings.IMAGEGEN_MAX_RUNNING_PER_USER
        users = sorted({t.user_id for t in tasks})
        if not users:
            return []
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # unnest yields the sorted array in order, so the locks are taken in user order.
                cursor.execute(
                    "SELECT count(pg_advisory_xact_lock(%s, u)) FROM unnest(%s::integer[]) AS u",
                    [RUNNING_CAP_LOCK, users],
                )
        running = dict(
            cls.objects.filter(user_id__in=users, status=cls.Status.PROCESSING)
            .values("user_id").annotate(n=models.Count("id")).values_list("user_id", "n")
        )
        room = {user_id: cap - running.get(user_id, 0) for user_id in users}
        kept: list[GenerationTask] = []
        for task in sorted(tasks, key=lambda t: (-t.priority, t.turn, t.pk)):  # claim order
            if room[task.user_id] > 0:
                room[task.user_id] -= 1
                kept.append(task)
        return kept

    def set_progress(self, token: uuid.UUID, progress: int) -> None:
        with transaction.atomic():
            self._lock()
            self._check_claim(token)
            progress = max(0, min(int(progress), 99))
            if progress <= self.progress:
                return
            self.progress = progress
            self._save("progress")

    def still_claimed(self, token: uuid.UUID) -> bool:
        """Cheap unlocked check between stages, for cooperative cancel."""
        return GenerationTask.objects.filter(pk=self.pk, status=self.Status.PROCESSING, claim_token=token).exists()

    def complete(
        self,
        token: uuid.UUID,
        *,
        result_name: str,
        content_type: str,
        compliance: dict | None,
        mask_name: str = "",
        engine: dict[str, Any] | None = None,
        needs_review: bool = False,
        outputs: tuple[OutputRecord, ...] = (),
    ) -> None:
        """Record the result (and mask) files, already written by the worker, and every output
        (``outputs``, the first being the result). Raises LostClaim if the task was canceled
        or taken back meanwhile: the caller deletes its files."""
        done = Completion(result_name, content_type, compliance, mask_name, engine, needs_review, outputs)
        with transaction.atomic():
            kept, lost = set_transitions.complete_rows(type(self), [(self, token, done)])
        if lost:
            raise LostClaim(f"task {self.pk}: claim {token} no longer holds")
        self._take(kept[0])

    @classmethod
    def complete_batch(cls, results: list[tuple[GenerationTask, uuid.UUID, Completion]]) -> set[int]:
        """Record several results in one transaction (one commit for the batch): each
        ``(task, token, completion)`` whose claim still holds is completed, by one statement
        whose ``WHERE`` is the fence (``set_transitions.complete_rows``). Returns the ids
        whose claim was lost (their files are the caller's to delete)."""
        with transaction.atomic():
            _, lost = set_transitions.complete_rows(cls, results)
        return lost

    def fail(self, token: uuid.UUID | None, *, code: str, message: str, transient: bool = False) -> bool:
        """Record a failed attempt. A transient error with attempts left goes back to
        pending after an exponential backoff with jitter; otherwise the task fails.
        ``token`` None is a rescue by another worker (no claim to present).
        Returns True when the task will be retried."""
        with transaction.atomic():
            self._lock()
            if token is not None:
                self._check_claim(token)
            elif self.status != self.Status.PROCESSING:
                raise InvalidTransition(f"cannot fail a {self.status} task")
            return self._record_failure(code=code, message=message, transient=transient)

    def _record_failure(self, *, code: str, message: str, transient: bool) -> bool:
        self.error_code, self.error_message = code, message[:2000]
        self.claim_token = None
        retry = transient and self.attempts < self.max_attempts
        if retry:
            self.status = self.Status.PENDING
            self.progress = 0
            self.run_after = timezone.now() + timedelta(seconds=backoff_seconds(self.attempts))
            self._save("status", "progress", "run_after", "error_code", "error_message", "claim_token")
            _announce_work(deadline=self.expires_at is not None)
        else:
            self.status = self.Status.FAILED
            self.finished_at = timezone.now()
            self._save("status", "finished_at", "error_code", "error_message", "claim_token")
        return retry

    def release(self, token: uuid.UUID) -> None:
        """Give an unfinished task back to the queue (graceful shutdown): the attempt
        does not count, as the task did nothing wrong."""
        self._give_back(token, 0.0)

    def postpone(self, token: uuid.UUID, seconds: float) -> None:
        """Back to the queue until ``seconds`` from now, because an upstream may not be called
        yet (the fleet's Gemini rate, or its 429): the attempt does not count and nothing
        failed, so no error is recorded. The event carries an ETA that includes the wait."""
        self._give_back(token, seconds)

    def _give_back(self, token: uuid.UUID, seconds: float) -> None:
        """Pending again from ``seconds`` from now, the claim's attempt not counted."""
        with transaction.atomic():
            self._lock()
            self._check_claim(token)
            self.status = self.Status.PENDING
            self.progress = 0
            self.attempts = max(self.attempts - 1, 0)
            self.claim_token = None
            self.worker = None
            self.run_after = timezone.now() + timedelta(seconds=seconds)
            self._save("status", "progress", "attempts", "claim_token", "worker", "run_after")
            if seconds <= 0:
                _announce_work(deadline=self.expires_at is not None)  # claimable now: wake an idle worker

    def requeue(self) -> None:
        """An operator gives a stuck processing task back to the queue. It is a ``release``
        under the claim as last read: if the worker finishes first, that claim no longer
        holds and this raises ``LostClaim`` instead of undoing its result; the stuck
        worker is fenced out the same way when it wakes up."""
        if self.status != self.Status.PROCESSING or self.claim_token is None:
            raise InvalidTransition(f"only a processing task can be requeued, this one is {self.status}")
        self.release(self.claim_token)

    def cancel(self) -> None:
        with transaction.atomic():
            self._lock()
            if self.status not in (self.Status.PENDING, self.Status.PROCESSING):
                raise InvalidTransition(f"a {self.status} task cannot be canceled")
            self.status = self.Status.CANCELED
            self.claim_token = None  # fences the worker still running it
            self.finished_at = timezone.now()
            self._save("status", "claim_token", "finished_at")

    def attach_input(self, token: uuid.UUID, *, name: str, content_type: str) -> None:
        """Record the photo a worker fetched for an ``image_url`` task (the file is
        written already). Raises LostClaim if the task is no longer ours: the caller
        deletes the file."""
        with transaction.atomic():
            self._lock()
            self._check_claim(token)
            self.input_image.name = name
            self.input_content_type = content_type
            self._save("input_image", "input_content_type")

    @classmethod
    def next_expiry(cls) -> datetime | None:
        """The earliest deadline among pending tasks (one read of the expiry index)."""
        return cls.objects.pending().filter(expires_at__isnull=False).aggregate(m=models.Min("expires_at"))["m"]

    @classmethod
    def expire_due(cls, limit: int = 100) -> list[int]:
        """End every pending task whose ``expires_at`` has passed: ``canceled`` with
        ``error_code: "expired"`` (and its ``task_canceled`` event). Safe to run from
        every process at once: rows another sweeper (or a claim) holds are skipped,
        and the locked re-read only returns rows still pending and due, so no task
        is expired twice. Returns the ids."""
        with transaction.atomic():
            due = list(cls.objects.expired().select_for_update(skip_locked=True).order_by("expires_at", "id")[:limit])
            _lock_batches_of(due)  # batches before any event (the lock order of generation.models.batch)
            for task in due:
                task.status = cls.Status.CANCELED
                task.error_code = ErrorCode.EXPIRED
                deadline = _json_value(task.expires_at)
                task.error_message = f"Not started before its deadline ({deadline}), set by expires_in."
                task.claim_token = None
                task.finished_at = timezone.now()
                task._save("status", "error_code", "error_message", "claim_token", "finished_at")
        if due:
            logger.info("Expired %d task(s) not started before their deadline: %s", len(due), [t.pk for t in due])
        return [t.pk for t in due]

    def retry(self) -> None:
        with transaction.atomic():
            self._lock()
            if self.status not in (self.Status.FAILED, self.Status.CANCELED):
                raise InvalidTransition(f"a {self.status} task cannot be retried")
            self.status = self.Status.PENDING
            self.progress = 0
            self.attempts = 0
            self.error_code = self.error_message = None
            self.started_at = self.finished_at = None
            now = timezone.now()
            self.run_after = now
            self.worker = None
            if self.expires_at is not None:
                # A retry is a new submission of the same work: it gets its expires_in again.
                self.expires_at = now + (self.expires_at - self.created_at)
            # A retry asked for by the owner is new work: it takes a fresh turn, like a submit.
            # (Automatic retries and take-backs keep theirs: they are owed their place.)
            self.turn = GenerationTask.next_turn(self.user_id, self.priority, announce=True,
                                                 deadline=self.expires_at is not None)
            self._save(
                "status", "progress", "attempts", "error_code", "error_message",
                "started_at", "finished_at", "run_after", "worker", "expires_at", "turn",
            )
            _announce_work(notified=True, deadline=self.expires_at is not None)

    @classmethod
    def rescue_orphans(cls, timeout: float | None = None, *, dry_run: bool = False) -> list[int]:
        """Take back processing tasks whose worker has gone silent (by the heartbeat timeout
        that worker declared, never the rescuer's; ``timeout`` overrides it for an operator):
        retry them, or fail them with ``worker_lost`` when their attempts are spent. Safe to
        run from every worker at once (rows another rescuer holds are skipped). Returns the task ids."""
        rescued: list[int] = []
        with transaction.atomic():
            orphans = list(cls.objects.orphaned(timeout).select_for_update(skip_locked=True, of=("self",))[:100])
            if not dry_run:
                _lock_batches_of(orphans)
            for task in orphans:
                rescued.append(task.pk)
                if dry_run:
                    continue
                logger.warning("Taking back task %d from silent worker %s", task.pk, task.worker_id)
                task._record_failure(
                    code=ErrorCode.WORKER_LOST,
                    message="The worker processing this task stopped responding.",
                    transient=True,
                )
        return rescued


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with equal jitter: base * 2^(attempt-1), capped, then 50-100 % of it."""
    base = settings.IMAGEGEN_RETRY_BASE_SECONDS
    cap = settings.IMAGEGEN_RETRY_MAX_SECONDS
    delay = min(cap, base * (2 ** max(attempt - 1, 0)))
    return delay / 2 + random.uniform(0, delay / 2)


def _json_value(value: Any, tz: Any = None) -> Any:
    # Datetimes as the REST API has always written them: ISO 8601 in the server's
    # time zone (``tz``: the current one, looked up by the caller), UTC as "Z".
    # Everything else on the task is JSON already.
    if isinstance(value, datetime):
        text = value.astimezone(tz or timezone.get_current_timezone()).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return value


def _lock_batches_of(tasks: Any) -> None:
    """Before changing several tasks in one transaction: lock their batches in id order,
    so two such transactions never take the same batch rows in opposite orders."""
    tasks = list(tasks)
    if any(task.batch_id is not None for task in tasks):
        GenerationTask.batch.field.related_model.lock_batches_of(tasks)


def _announce_work(*, notified: bool = False, deadline: bool = False) -> None:
    """Wake idle workers when this transaction commits: NOTIFY reaches other
    processes (PostgreSQL delivers it at commit), the local wake-up this one.
    ``notified``: this transaction issued the NOTIFY already (``next_turn(announce=True)``).
    ``deadline``: the work carries an ``expires_at``, so the expiry sweepers look too."""
    if connection.vendor == "postgresql" and not notified:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [wakeup.CHANNEL, wakeup.DEADLINE if deadline else ""])
    transaction.on_commit(wakeup.local.notify)
    if deadline:
        transaction.on_commit(wakeup.deadlines.notify)
