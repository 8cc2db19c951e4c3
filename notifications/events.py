"""Recording task events and pushing them to the owner's connections.

``record`` runs inside the task's transaction. ``publish`` runs after commit
and hands the message to one long-lived event loop per process (the server's
own loop in a web process, else a private thread): setting up a loop and Redis
connections per message (``async_to_sync`` each time) tops out near 185 msg/s,
and with the in-memory layer a foreign loop would not even wake the consumers.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from typing import Any, TypedDict

from channels.layers import get_channel_layer
from django.utils import timezone

from generation.models import Batch, GenerationTask

from .metrics import PUBLISHES
from .models import Event

logger = logging.getLogger(__name__)

MAX_BACKLOG = 10_000
PUBLISH_TIMEOUT = 5.0
# A push that fails slowly (a hung Redis, not a refused connection) would cost
# this long per event; then stop trying for a moment and let clients fetch what
# they missed from the log. Fast failures keep trying, so pushes resume the
# moment Redis is back.
SLOW_FAILURE = 0.25
RETRY_AFTER_SLOW_FAILURE = 2.0


class EventMessage(TypedDict):
    type: str
    seq: int
    task_id: int | None  # None for batch and webhook events
    timestamp: str
    data: dict[str, Any]  # the task's live_state(): the REST body of the task at this event


def group_name(user_id: int) -> str:
    return f"user.{user_id}"


def event_type(task: GenerationTask, created: bool) -> str:
    if created:
        return Event.Type.CREATED
    return {
        GenerationTask.Status.COMPLETED: Event.Type.COMPLETE,
        GenerationTask.Status.FAILED: Event.Type.FAILED,
        GenerationTask.Status.CANCELED: Event.Type.CANCELED,
    }.get(task.status, Event.Type.UPDATE)


def record(task: GenerationTask, created: bool) -> Event:
    """Append the task's current state as the owner's next event (inside its transaction)."""
    return Event.append(
        user_id=task.user_id,
        task_id=task.pk,
        type=event_type(task, created),
        data=task.live_state(),
        created_at=timezone.now(),
    )


def record_batch(batch: Batch, *, finished: bool) -> list[Event]:
    """Append the batch's ``batch_update`` (its JSON without ``tasks``) and, when this
    change finished it, ``batch_complete`` right after (inside its transaction)."""
    data = batch.live_state(with_tasks=False)
    now = timezone.now()
    types = [Event.Type.BATCH_UPDATE, *([Event.Type.BATCH_COMPLETE] if finished else [])]
    return [Event.append(user_id=batch.user_id, task_id=None, type=kind, data=data, created_at=now) for kind in types]


class Publisher:
    """Sends messages to channel-layer groups, in order, from one event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, dict]] | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self.counts: Counter[str] = Counter()
        self.skip_until = 0.0  # monotonic time until which pushes are skipped after a failure

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publish on ``loop`` (the ASGI server's) from now on."""
        with self._lock:
            if self._loop is not loop:
                self._loop, self._queue = loop, None
                loop.call_soon_threadsafe(self._start_drain, loop)

    def _current_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None and not self._loop.is_closed():
                return self._loop
            if self._own_loop is None or self._own_loop.is_closed():
                self._own_loop = asyncio.new_event_loop()
                threading.Thread(target=self._own_loop.run_forever, name="imagegen-publish", daemon=True).start()
            self._loop, self._queue = self._own_loop, None
            self._own_loop.call_soon_threadsafe(self._start_drain, self._own_loop)
            return self._own_loop

    def _start_drain(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._queue is None and self._loop is loop:
            self._queue = asyncio.Queue()
            loop.create_task(self._drain(self._queue))

    def submit(self, group: str, message: dict) -> None:
        loop = self._current_loop()
        try:
            loop.call_soon_threadsafe(self._enqueue, loop, group, message)
        except RuntimeError:  # the loop closed under us; the event log still has it
            self._count("dropped")

    def _enqueue(self, loop: asyncio.AbstractEventLoop, group: str, message: dict) -> None:
        self._start_drain(loop)
        queue = self._queue
        if queue is None:
            self._count("dropped")
            return
        if queue.qsize() >= MAX_BACKLOG:
            # Clients recover it from the log on resume or on their next ping.
            self._count("dropped")
            logger.warning("Publish backlog full (%d); dropping push for %s", MAX_BACKLOG, group)
            return
        queue.put_nowait((group, message))

    async def _drain(self, queue: asyncio.Queue[tuple[str, dict]]) -> None:
        failing = 0  # consecutive failures: one warning per outage, not one per event
        while True:
            group, message = await queue.get()
            if time.monotonic() < self.skip_until:
                self._count("skipped")
                continue
            started = time.monotonic()
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT):  # unlike wait_for, no extra task per push
                    await get_channel_layer().group_send(group, message)
            except Exception as exc:
                self._count("failed")
                if time.monotonic() - started > SLOW_FAILURE:
                    self.skip_until = time.monotonic() + RETRY_AFTER_SLOW_FAILURE
                if not failing:
                    logger.warning("Push to %s failed (%s); clients recover it from the event log", group, exc)
                failing += 1
            else:
                self._count("published")
                if failing:
                    logger.warning("Pushes work again after %d failed", failing)
                    failing = 0
            # The in-memory layer's group_send need not yield: let the consumers run
            # between pushes, or a burst overfills their channels (capacity) first.
            await asyncio.sleep(0)

    def _count(self, result: str) -> None:
        self.counts[result] += 1
        PUBLISHES.labels(result).inc()

    def flush_sync(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far was handed to the layer (tests, shutdown)."""
        loop = self._current_loop()
        done = threading.Event()

        def check() -> None:
            if self._queue is None or self._queue.empty():
                # one more turn so the item just taken by _drain finishes its send
                loop.call_later(0.01, done.set)
            else:
                loop.call_later(0.005, check)

        loop.call_soon_threadsafe(check)
        return done.wait(timeout)


publisher = Publisher()


def publish(user_id: int, message: dict) -> None:
    """Push one committed event to the user's group (never raises).

    ``committed_at`` (wall clock, just after commit) lets the consumer measure
    the push latency; it is not part of the event the client sees.
    """
    try:
        publisher.submit(group_name(user_id), {"type": "task.event", "event": message, "committed_at": time.time()})
    except Exception:
        publisher._count("failed")
        logger.exception("Could not schedule push for user %d", user_id)


def close_revoked_key(sender: Any, *, key_id: int, user_id: int, **kwargs: Any) -> None:
    """``apikeys.signals.key_revoked``: tell the user's open sockets and event streams,
    so the ones opened with that key close now (each checks the id it was opened with)."""
    try:
        publisher.submit(group_name(user_id), {"type": "key.revoked", "key_id": key_id})
    except Exception:
        logger.exception("Could not tell the connections of user %d that key %d was revoked", user_id, key_id)
