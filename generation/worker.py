"""The claim-run-heartbeat loop behind ``manage.py runworker`` and the embedded worker.

A ``Worker`` is one process's worth of runner threads plus a heartbeat thread
(and, on PostgreSQL, a LISTEN thread). Claiming is a short transaction of its
own; generation runs with no transaction open; every later write presents the
claim token, so a worker presumed dead that wakes up cannot overwrite a task
another worker took back.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from imagegen_site import urlguard

from . import expiry, metrics, retention, wakeup
from .engine import EngineError, GenerationResult, InvalidOptions, UpstreamBusy, get_backend
from .engine.spec import JobSpec, parse_job
from .engine.upload import UploadRejected, check_upload
from .errors import ErrorCode
from .models import (
    Completion, GenerationTask, InvalidTransition, LostClaim, OutputRecord, WorkerProcess, input_upload_to,
    mask_upload_to, output_upload_to, result_upload_to,
)
from .new_files import store_new

logger = logging.getLogger(__name__)

MAX_BATCH = 100
# Sent with ``worker=`` once a worker's threads run, and as it stops: other apps run their own
# loops inside every worker process this way (webhook delivery), unknown to this module.
worker_started = Signal()
worker_stopped = Signal()


@dataclass(eq=False)
class Produced:
    """A generated result, stored, waiting to be recorded."""

    task: GenerationTask
    token: uuid.UUID
    name: str
    mask_name: str
    result: GenerationResult
    started: float
    #: Every output stored (the first's file is ``name``).
    outputs: tuple[OutputRecord, ...] = ()

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(n for n in (self.name, self.mask_name, *(o.file_name for o in self.outputs)) if n))

    def completion(self) -> Completion:
        result = self.result
        first = self.outputs[0] if self.outputs else None
        return Completion(
            result_name=self.name, content_type=first.content_type if first else result.content_type,
            compliance=first.compliance if first else result.compliance,
            mask_name=self.mask_name, engine=result.engine or None, needs_review=result.needs_review,
            outputs=self.outputs,
        )


def reuse_connection() -> None:
    """``close_old_connections()`` for a loop turn (a connection past ``CONN_MAX_AGE`` or one that
    erred is dropped), without the health check's round trip when the idle connection shows it
    is alive: Django re-arms a ``SELECT 1`` before the next query at every call (0.35-0.6 ms,
    paid by every claim, the first after a NOTIFY wake-up included). A server that ended the
    connection (a restart, ``pg_terminate_backend``, an idle timeout, a pooler closing it) has
    sent its FATAL message or closed the socket, so an idle socket with nothing to read has not
    been ended; a readable one (or a connection not idle) keeps Django's check. A connection
    that dies after this look fails the claim, which reconnects and retries (``Worker._claim``)."""
    close_old_connections()
    if connection.vendor != "postgresql" or connection.health_check_done or not connection.health_check_enabled:
        return
    from psycopg.pq import TransactionStatus

    raw = connection.connection
    if raw is None or raw.closed or raw.broken or raw.info.transaction_status != TransactionStatus.IDLE:
        return
    poller = select.poll()  # not select.select: a worker's descriptors may be numbered past FD_SETSIZE
    poller.register(raw.fileno(), select.POLLIN | select.POLLPRI)
    if not poller.poll(0):
        connection.health_check_done = True


class ProgressReporter:
    """The progress callback handed to a backend.

    Writes are coalesced to one per ``interval`` per task (latest wins); in
    between, a cheap read still notices a cancel at every stage boundary.
    Raises ``LostClaim`` to stop the backend when the task is no longer ours.
    """

    def __init__(self, task: GenerationTask, token: uuid.UUID, interval: float) -> None:
        self.task, self.token, self.interval = task, token, interval
        self._last_write = time.monotonic()

    def __call__(self, progress: int) -> None:
        if progress >= 100:
            return  # complete() follows and is fenced itself
        now = time.monotonic()
        if now - self._last_write >= self.interval:
            self.task.set_progress(self.token, progress)
            self._last_write = now
        elif not self.task.still_claimed(self.token):
            raise LostClaim(f"task {self.task.pk} was canceled or taken back")


class Worker:
    def __init__(
        self,
        *,
        concurrency: int = 1,
        burst: bool = False,
        worker_id: str | None = None,
        heartbeat_timeout: float | None = None,
        poll_interval: float | None = None,
        embedded: bool = False,
    ) -> None:
        self.concurrency = concurrency
        self.burst = burst
        self.name = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat_timeout = heartbeat_timeout or settings.IMAGEGEN_HEARTBEAT_TIMEOUT
        self.embedded = embedded
        self._is_postgres = connection.vendor == "postgresql"
        default_poll = 1.0 if self._is_postgres else 0.2  # PostgreSQL has NOTIFY; SQLite only polls
        self.poll_interval = poll_interval or settings.IMAGEGEN_POLL_INTERVAL or default_poll
        self.row: WorkerProcess | None = None
        self.tasks_done = 0
        #: Attempts this worker ended, by outcome: completed, failed (for good), retrying, discarded, unrecorded.
        self.outcomes: Counter[str] = Counter()
        self._busy = 0  # runner threads inside run_once (a burst may not end while one is)
        self._stopping = threading.Event()
        self._halted = threading.Event()  # stops heartbeat and listener threads
        self._inflight: dict[uuid.UUID, GenerationTask] = {}
        self._seconds_per_task: float | None = None
        self._unrecorded: list[tuple[GenerationTask, uuid.UUID, str, str]] = []
        self._lock = threading.Lock()
        self._claim_lock = threading.Lock()  # claims of this process's threads, one at a time
        self._runners: list[threading.Thread] = []
        self._services: list[threading.Thread] = []

    # --- lifecycle ----------------------------------------------------------------------
    def register(self) -> WorkerProcess:
        if self.row is None:
            self.row = WorkerProcess.objects.create(
                name=self.name, concurrency=self.concurrency, embedded=self.embedded,
                heartbeat_timeout=timedelta(seconds=self.heartbeat_timeout),
            )
            logger.info("Worker %s started (concurrency %d, burst %s)", self.name, self.concurrency, self.burst)
        return self.row

    def start(self) -> None:
        """Start the runner threads and return (the embedded mode's entry point)."""
        try:
            self.register()
        finally:
            if threading.current_thread() is not threading.main_thread():
                connection.close()  # this thread's connection is not needed any more
        self._services.append(threading.Thread(target=self._heartbeat_loop, name="imagegen-heartbeat", daemon=True))
        # Purges expired tasks, files and events when due (one process of the fleet at a time).
        self._services.append(
            threading.Thread(target=retention.retention_loop, args=(self._halted,), name="imagegen-retention", daemon=True)
        )
        if not self.embedded:  # the web process hosting an embedded worker runs its own (imagegen_site.asgi)
            self._services.append(expiry.Sweeper(self._halted))
        conninfo = wakeup.postgres_conninfo()
        if conninfo is not None and not self.burst:
            self._services.append(wakeup.Listener(conninfo, self._halted))
        for thread in self._services:
            thread.start()
        for i in range(self.concurrency):
            runner = threading.Thread(target=self._runner_loop, name=f"imagegen-runner-{i}", daemon=True)
            self._runners.append(runner)
            runner.start()
        worker_started.send(sender=Worker, worker=self)

    def run(self) -> None:
        """Run until stopped (or, with ``burst``, until the queue is empty)."""
        self.start()
        try:
            while any(r.is_alive() for r in self._runners) and not self._stopping.is_set():
                self._stopping.wait(0.5)
            self._drain(settings.IMAGEGEN_SHUTDOWN_GRACE)
        finally:
            self._shutdown()
            connection.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop claiming; in-flight tasks finish within the grace period (see ``run``)."""
        if not self._stopping.is_set():
            logger.info("Worker %s stopping: no new claims, finishing in-flight work", self.name)
        self._stopping.set()
        wakeup.local.notify()

    def _drain(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        for runner in self._runners:
            runner.join(max(deadline - time.monotonic(), 0))
        with self._lock:
            unfinished = list(self._inflight.items())
        for token, task in unfinished:
            try:
                task.release(token)
                logger.warning("Released unfinished task %d back to the queue", task.pk)
            except InvalidTransition:
                pass  # finished, canceled or taken back meanwhile

    def _shutdown(self) -> None:
        self._halted.set()
        wakeup.local.notify()
        wakeup.deadlines.notify()  # the expiry sweeper sleeps on it
        worker_stopped.send(sender=Worker, worker=self)
        for thread in self._services:
            thread.join(5)  # they hold database connections: close them before we return
        if self.row is not None:
            self.row.mark_stopped(self.tasks_done)
        with self._lock:
            outcomes = dict(self.outcomes)
        logger.info(
            "Worker %s stopped after %d tasks (%d completed, %d failed, %d retrying, %d discarded)",
            self.name, self.tasks_done, outcomes.get("completed", 0), outcomes.get("failed", 0),
            outcomes.get("retrying", 0), outcomes.get("discarded", 0),
        )

    # --- the loop -------------------------------------------------------------------------
    def _runner_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                reuse_connection()
                seen = wakeup.local.generation
                with self._lock:
                    self._busy += 1
                found = False
                try:
                    found = self.run_once()
                finally:
                    with self._lock:
                        self._busy -= 1
                    if self.burst and found:
                        wakeup.local.notify()  # idle burst threads re-check whether the queue is done
                if found:
                    continue
                wait = self._burst_wait() if self.burst else self.poll_interval
                if wait is None:
                    break
                wakeup.local.wait(seen, wait)
        except Exception:
            logger.exception("Runner thread crashed; the heartbeat timeout will recover its task")
        finally:
            connection.close()

    def _burst_wait(self) -> float | None:
        """How long an idle burst thread waits before looking again, or None when the burst is
        done: no pending task is left (retries waiting for their ``run_after`` included) and no
        thread of this worker is still running one (it may yet hand its task back for a retry)."""
        with self._lock:
            busy = self._busy
        # Expired tasks are never claimed (the expiry sweeper ends them): not worth waiting for.
        waiting = GenerationTask.objects.pending().exclude(pk__in=GenerationTask.objects.expired().values("pk"))
        next_run = waiting.next_run_after()
        if next_run is None:
            return None if busy == 0 else self.poll_interval
        ahead = (next_run - timezone.now()).total_seconds()
        # Due already but not ours to claim (locked by a claim elsewhere): look again shortly.
        return min(max(ahead, 0.05), self.poll_interval)

    def run_once(self) -> bool:
        """Claim and run the next task (or a small batch of fast ones). True: found work, loop again now."""
        self.register()
        assert self.row is not None
        seen = wakeup.local.generation
        claimed = self._claim_tracked(self.batch_size())
        if not claimed:
            return False
        started = time.monotonic()
        produced: list[Produced] = []
        cut_ins, batch = 0, len(claimed)
        i = 0
        while i < len(claimed):
            if self._stopping.is_set():
                break  # the rest stay in _inflight and are released by _drain
            task, token = claimed[i]
            metrics.observe_claim((task.started_at - task.run_after).total_seconds())
            outcome = self._produce(task, token)
            if outcome is not None:
                produced.append(outcome)
            i += 1
            # Work queued while this batch runs (another seller's single photo, say) would
            # otherwise wait for the whole batch: claim the next task in fair order now and run
            # it next. Only on a new wake-up, and at most once per task of the batch, so a drain
            # with nothing new queued keeps its shared commits. (A burst's threads wake each
            # other after every claim: not a sign of new work.)
            if (i < len(claimed) and cut_ins < batch and not self.burst
                    and wakeup.local.generation != seen):
                seen = wakeup.local.generation
                cut_ins += 1
                claimed[i:i] = self._claim_tracked(1)
        self._record(produced)
        if produced:
            # A moving average of this worker's wall time per claimed task (its own
            # throughput, not the queue's typical run time) sizes its claim batches.
            per_task = (time.monotonic() - started) / len(claimed)
            previous = self._seconds_per_task
            self._seconds_per_task = per_task if previous is None else 0.8 * previous + 0.2 * per_task
        return True

    def _claim_tracked(self, limit: int) -> list[tuple[GenerationTask, uuid.UUID]]:
        """Claim up to ``limit`` tasks and put them in ``_inflight``.

        Never a second attempt of a task one of our threads still runs (taken back meanwhile,
        e.g. requeued by an operator, but that thread has not noticed yet): the claim and
        the in-flight set change under one lock, so two threads cannot both miss it."""
        with self._claim_lock:
            with self._lock:
                running = {task.pk for task in self._inflight.values()}
            claimed = self._claim(running, limit)
            with self._lock:  # all of them, so a shutdown releases the ones not started yet
                self._inflight.update({token: task for task, token in claimed})
        return claimed

    def _claim(self, running: set[int], limit: int) -> list[tuple[GenerationTask, uuid.UUID]]:
        """``claim_next``, once more on a new connection if the connection was lost (dropped
        while idle, after ``reuse_connection`` looked: a runner thread must not die of it).
        Call under ``_claim_lock``."""
        assert self.row is not None
        try:
            return GenerationTask.claim_next(self.row, limit=limit, exclude=running)
        except (OperationalError, InterfaceError):
            # Most likely the connection was lost (psycopg may not tell that from a refusal, and
            # Django may have reconnected already); once more on a new one either way: a claim
            # that failed rolled back, and one that committed unseen is found below.
            logger.warning("Worker %s: the claim failed (database connection lost?); retrying once", self.name,
                           exc_info=True)
            connection.close()
        # The connection may have died after the COMMIT reached the server and before its
        # answer came back: those rows are claimed by this worker under tokens we never saw,
        # and its heartbeat would keep anyone from taking them back. They are ours: run them.
        # (Every task our threads run is in ``_inflight`` under ``_claim_lock``: ``running``; a
        # failure that could not be written is the heartbeat's to retry, not a run to resume.)
        with self._lock:
            unrecorded = {task.pk for task, *_ in self._unrecorded}
        mine = GenerationTask.objects.claimed_by(self.row).exclude(pk__in=running | unrecorded)
        adopted = [(task, task.claim_token) for task in mine if task.claim_token is not None]
        if adopted:
            logger.warning("Worker %s resumes %d task(s) whose claim committed unseen", self.name, len(adopted))
            return adopted
        return GenerationTask.claim_next(self.row, limit=limit, exclude=running)

    def batch_size(self) -> int:
        """How many tasks one claim transaction takes: 1 for real image work; for tasks
        that finish in milliseconds, as many as fit in IMAGEGEN_PREFETCH_WINDOW seconds,
        so the claim's commit (and the finish's) is shared. A batch is held by this
        worker (processing, covered by its heartbeat) for at most about that window."""
        window = settings.IMAGEGEN_PREFETCH_WINDOW
        per_task = self._seconds_per_task
        if window <= 0 or per_task is None:
            return 1
        return max(1, min(MAX_BATCH, int(window / max(per_task, 1e-4))))

    def _produce(self, task: GenerationTask, token: uuid.UUID) -> Produced | None:
        """Generate one task's image and store the file (no transaction open).
        Failures are recorded here; a result is returned for ``_record``."""
        started = time.monotonic()
        try:
            data = self._input(task, token)
            progress = ProgressReporter(task, token, settings.IMAGEGEN_PROGRESS_INTERVAL)
            job = self._job(task)
            result = get_backend().generate(data, job, progress)
            # Written outside any transaction; removed again if the claim is lost meanwhile.
            outputs = self._store_outputs(task, result, job)
            mask_name = ""
            if result.mask:
                mask_name = store_new(mask_upload_to(task, "mask.png"), result.mask)
            return Produced(task, token, outputs[0].file_name, mask_name, result, started, outputs)
        except LostClaim:
            self._finish(task, token, started, "discarded", None, "discarded (canceled or taken back)")
        except UpstreamBusy as exc:  # the fleet's Gemini rate: wait pending, no attempt spent
            try:
                task.postpone(token, exc.retry_after)
                outcome = "postponed"
            except LostClaim:
                outcome = "discarded"
            self._finish(task, token, started, outcome, None, f"postponed {exc.retry_after:.1f}s ({exc.reason})")
        except EngineError as exc:
            outcome = self._fail(task, token, exc.code, exc.message, exc.transient)
            self._finish(task, token, started, outcome, exc.code, f"error {exc.code}")
        except Exception as exc:  # a bug or an infrastructure blip: retry, then fail
            logger.exception("Task %d crashed", task.pk)
            outcome = self._fail(task, token, ErrorCode.INTERNAL_ERROR, f"Internal error: {type(exc).__name__}", True)
            self._finish(task, token, started, outcome, ErrorCode.INTERNAL_ERROR, "error internal_error")
        return None

    @staticmethod
    def _store_outputs(task: GenerationTask, result: GenerationResult, job: JobSpec) -> tuple[OutputRecord, ...]:
        """Write every output's file; the first is the task's result. A file written before
        a later one fails is removed again (the attempt stores all or nothing)."""
        rendered = result.rendered(job)
        if len(rendered) != len(job.outputs):
            logger.warning("Task %d asked for %d outputs; the backend rendered %d", task.pk, len(job.outputs), len(rendered))
        records: list[OutputRecord] = []
        try:
            for i, out in enumerate(rendered):
                upload_to = result_upload_to(task, f"result.{out.extension}") if i == 0 \
                    else output_upload_to(task, f"output.{out.extension}")
                name = store_new(upload_to, out.data)
                records.append(OutputRecord(
                    name=out.name, preset=out.preset, format=out.format, width=out.width, height=out.height,
                    bytes=len(out.data), file_name=name, content_type=out.content_type, compliance=out.compliance,
                ))
        except Exception:
            for record in records:
                default_storage.delete(record.file_name)
            raise
        return tuple(records)

    @staticmethod
    def _input(task: GenerationTask, token: uuid.UUID) -> bytes:
        """The photo's bytes: the stored input, or (an ``image_url`` task's first run) the
        photo fetched through the URL guard, checked exactly like an upload, then stored
        as the task's input so later attempts and ``input_image_url`` use it."""
        if task.input_image or not task.image_url:
            try:
                with task.input_image.open("rb") as fh:
                    return fh.read()
            except (FileNotFoundError, ValueError):  # ValueError: no file at all
                raise EngineError(ErrorCode.INPUT_MISSING, "The uploaded image is no longer stored.") from None
        try:
            fetched = urlguard.fetch(task.image_url, max_bytes=settings.IMAGEGEN_MAX_UPLOAD_BYTES,
                                     timeout=settings.IMAGEGEN_FETCH_TIMEOUT)
        except urlguard.FetchFailed as exc:
            raise EngineError(ErrorCode.FETCH_FAILED, f"Could not fetch image_url: {exc}.", transient=exc.transient) from None
        try:
            checked = check_upload(fetched.content, max_bytes=settings.IMAGEGEN_MAX_UPLOAD_BYTES,
                                   max_pixels=settings.IMAGEGEN_MAX_PIXELS, min_side=settings.IMAGEGEN_MIN_SIDE)
        except UploadRejected as exc:
            raise EngineError(ErrorCode.FETCH_FAILED, f"The file at image_url is not a usable photo: {exc.message}") from None
        try:
            # hint_box is bounded by the photo as displayed: only known now.
            parse_job(task.options, image_size=(checked.width, checked.height))
        except InvalidOptions as exc:
            raise EngineError(ErrorCode.INVALID_OPTIONS, f"{exc} (the photo at image_url)") from None
        name = default_storage.save(input_upload_to(task, f"input.{checked.extension}"), ContentFile(fetched.content))
        try:
            task.attach_input(token, name=name, content_type=checked.content_type)
        except Exception:
            default_storage.delete(name)
            raise
        return fetched.content

    @staticmethod
    def _job(task: GenerationTask) -> JobSpec:
        """The task's options as parsed at submit. A stored form that no longer parses (a row
        written by hand or by an older release) fails the task at once: retrying cannot help."""
        try:
            return JobSpec.from_options(task.options)
        except InvalidOptions as exc:
            raise EngineError(ErrorCode.INVALID_OPTIONS, f"The task's stored options are not valid: {exc}") from None

    def _record(self, produced: list[Produced]) -> None:
        """Complete the produced tasks, all in one transaction: one commit for the batch.
        A task canceled or taken back meanwhile (batches last a fraction of a second, so
        this fence is the only check they need) is left as it is and its file removed."""
        if not produced:
            return
        try:
            if len(produced) == 1:
                item = produced[0]
                done = item.completion()
                try:
                    item.task.complete(item.token, result_name=done.result_name, content_type=done.content_type,
                                       compliance=done.compliance, mask_name=done.mask_name, engine=done.engine,
                                       needs_review=done.needs_review, outputs=done.outputs)
                    lost: set[int] = set()
                except LostClaim:
                    lost = {item.task.pk}
            else:
                lost = GenerationTask.complete_batch([(i.task, i.token, i.completion()) for i in produced])
        except Exception:
            logger.exception("Could not record %d finished task(s); retrying them", len(produced))
            for item in produced:
                self._delete_files(item)
                outcome = self._fail(item.task, item.token, ErrorCode.INTERNAL_ERROR, "Internal error: the result could not be recorded.", True)
                self._finish(item.task, item.token, item.started, outcome, ErrorCode.INTERNAL_ERROR, "error internal_error")
            return
        for item in produced:
            if item.task.pk in lost:
                self._delete_files(item)
                self._finish(item.task, item.token, item.started, "discarded", None, "discarded (canceled or taken back)")
            else:
                self._finish(item.task, item.token, item.started, "completed", None, "completed")

    @staticmethod
    def _delete_files(item: Produced) -> None:
        for name in item.files:
            default_storage.delete(name)

    def _finish(self, task: GenerationTask, token: uuid.UUID, started: float, result: str,
                error_code: str | None, outcome: str) -> None:
        elapsed = time.monotonic() - started
        self._forget(token, done=True)
        with self._lock:
            self.outcomes[result] += 1
        metrics.observe_attempt(result, error_code, elapsed)
        logger.info(
            "Task %d user %d attempt %d %s in %dms (worker %s)",
            task.pk, task.user_id, task.attempts, outcome, elapsed * 1000, self.name,
        )

    def _forget(self, token: uuid.UUID, done: bool = False) -> None:
        with self._lock:
            self._inflight.pop(token, None)
            if done:
                self.tasks_done += 1

    def _fail(self, task: GenerationTask, token: uuid.UUID, code: str, message: str, transient: bool) -> str:
        """Record a failed attempt. Returns the outcome for metrics: retrying, failed or discarded.
        If even that write fails (database down), the heartbeat thread retries it: a task
        must never stay 'processing' under a live worker that has given up on it."""
        try:
            return "retrying" if task.fail(token, code=code, message=message, transient=transient) else "failed"
        except LostClaim:
            return "discarded"  # canceled or taken back meanwhile: the new owner decides
        except Exception:
            logger.exception("Could not record the failure of task %d; the heartbeat will retry", task.pk)
            with self._lock:
                self._unrecorded.append((task, token, code, message))
            return "unrecorded"

    def _retry_unrecorded(self) -> None:
        with self._lock:
            pending, self._unrecorded = self._unrecorded, []
        for task, token, code, message in pending:
            self._fail(task, token, code, message, True)

    # --- liveness -------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        """Beat every third of the timeout, and take back the tasks of silent workers."""
        interval = max(self.heartbeat_timeout / 3, 0.1)
        try:
            while not self._halted.wait(interval):
                close_old_connections()
                try:
                    assert self.row is not None
                    with self._lock:
                        done = self.tasks_done
                    self.row.beat(done)
                    self._retry_unrecorded()
                    # Each owner is judged by the timeout it declared, not by ours.
                    rescued = GenerationTask.rescue_orphans()
                    if rescued:
                        metrics.TASK_OUTCOMES.labels("lost", ErrorCode.WORKER_LOST).inc(len(rescued))
                except Exception:
                    logger.exception("Heartbeat failed; retrying")
        finally:
            connection.close()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"name": self.name, "tasks_done": self.tasks_done, "in_flight": len(self._inflight),
                    "outcomes": dict(self.outcomes)}
