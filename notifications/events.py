"""Recording task events and pushing them to the owner's connections.

``record`` runs inside the task's transaction. ``publish`` runs after commit
and hands the message to one long-lived event loop per process (the server's
own loop in a web process, else a private thread): setting up a loop and Redis
connections per message (``async_to_sync`` each time) tops out near 185 msg/s,
and with the in-memory layer a foreign loop would not even wake the consumers.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from functools import partial
from datetime import datetime
from typing import Any, TypedDict

from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from generation.models import Batch, ClaimStatement, CreationStatement, GenerationTask

from .metrics import PUBLISHES
from .models import Event, EventCounter

logger = logging.getLogger(__name__)

MAX_BACKLOG = 10_000
# At most this many pushes handed to Redis in one round trip.
MAX_PIPELINE = 100
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


def record_many(tasks: list[GenerationTask]) -> list[tuple[int, dict]]:
    """Append each task's current state as its owner's next event, in list order, by one
    statement (inside the tasks' transaction): the set-based transitions' events. Returns
    ``(user_id, message)`` per event, the message as ``Event.as_message()`` gives it."""
    now = timezone.now()
    states = GenerationTask.live_states(tasks)
    return append_events([(t.user_id, t.pk, event_type(t, False), state, now) for t, state in zip(tasks, states)])


def append_events(rows: list[tuple[int, int | None, str, dict[str, Any], datetime]]) -> list[tuple[int, dict]]:
    """Append ``(user_id, task_id, type, data, created_at)`` rows to their users' logs in the
    caller's transaction, in list order per user. Returns ``(user_id, message)`` of each
    event in list order (``Event.as_message()``'s form, without an ``Event`` per row).

    On PostgreSQL one statement: each user's counter moves by its number of rows (the
    counters are taken in user order, so two such appends cannot deadlock on each other),
    and the user's rows take the seqs after the old value, in list order. The counter row
    stays locked until commit, as with ``Event.append``: seqs stay gapless and in commit
    order. Elsewhere one ``Event.append`` per row."""
    if not rows:
        return []
    if connection.vendor != "postgresql":
        appended = [Event.append(user_id=u, task_id=t, type=k, data=d, created_at=c) for u, t, k, d, c in rows]
        return [(event.user_id, event.as_message()) for event in appended]
    counter = connection.ops.quote_name(EventCounter._meta.db_table)
    table = connection.ops.quote_name(Event._meta.db_table)
    # The rows travel as one JSON document: a text[] of payloads would be quoted element by
    # element on the client (measured: a regex pass per character class, 10 % of a drain).
    # created_at goes as full ISO 8601 (DjangoJSONEncoder would cut it to milliseconds).
    document = json.dumps([[u, t, k, d, c.isoformat()] for u, t, k, d, c in rows], cls=DjangoJSONEncoder)
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH r AS (SELECT (e->>0)::bigint AS user_id, (e->>1)::bigint AS task_id, e->>2 AS type, e->3 AS data, "
            "(e->>4)::timestamptz AS created_at, ord FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS x (e, ord)), "
            "n AS (SELECT user_id, count(*) AS n FROM r GROUP BY user_id), "
            f"bumped AS (INSERT INTO {counter} (user_id, last_seq) SELECT user_id, n FROM n ORDER BY user_id "
            f"ON CONFLICT (user_id) DO UPDATE SET last_seq = {counter}.last_seq + EXCLUDED.last_seq "
            "RETURNING user_id, last_seq) "
            f"INSERT INTO {table} (user_id, seq, task_id, type, data, created_at) "
            "SELECT r.user_id, b.last_seq - n.n + row_number() OVER (PARTITION BY r.user_id ORDER BY r.ord), "
            "r.task_id, r.type, r.data, r.created_at FROM r JOIN n USING (user_id) JOIN bumped b USING (user_id) "
            "RETURNING user_id, seq",
            [document],
        )
        inserted = cursor.fetchall()
    # Each user's rows took that user's new seqs in list order: match them back that way.
    seqs: dict[int, list[int]] = {}
    for user_id, seq in sorted(inserted):
        seqs.setdefault(user_id, []).append(seq)
    taken: Counter[int] = Counter()
    stamps: dict[datetime, str] = {}  # a batch's rows share one created_at
    messages = []
    for user_id, task_id, kind, data, created_at in rows:
        seq = seqs[user_id][taken[user_id]]
        taken[user_id] += 1
        stamp = stamps.get(created_at) or stamps.setdefault(created_at, Event.timestamp_of(created_at))
        messages.append((user_id, Event.message(kind, seq, task_id, stamp, data)))
    return messages


def append_created(statement: CreationStatement) -> None:
    """The ``task_created`` event of a task created by one statement, added to that statement:
    the owner's counter moves by one (its row locked until commit, as in ``Event.append``, so
    seqs stay gapless and in commit order) and the event takes the new seq, with the task JSON
    the statement rendered. Pushed after commit, as every event."""
    counter = connection.ops.quote_name(EventCounter._meta.db_table)
    table = connection.ops.quote_name(Event._meta.db_table)
    created_at = timezone.now()
    statement.add(
        f"created_seq AS (INSERT INTO {counter} (user_id, last_seq) SELECT user_id, 1 FROM created "
        f"ON CONFLICT (user_id) DO UPDATE SET last_seq = {counter}.last_seq + 1 RETURNING user_id, last_seq), "
        f"created_event AS (INSERT INTO {table} (user_id, seq, task_id, type, data, created_at) "
        "SELECT c.user_id, s.last_seq, c.id, %s::text, c.state, %s::timestamptz FROM created c "
        "JOIN created_seq s USING (user_id) "
        "RETURNING id, seq)",
        [Event.Type.CREATED, created_at],
        ["(SELECT id FROM created_event)", "(SELECT seq FROM created_event)"],
        partial(_created, created_at),
    )


def _created(created_at: datetime, task: GenerationTask, state: dict[str, Any], values: tuple[Any, ...]) -> None:
    pk, seq = values
    event = Event(id=pk, user_id=task.user_id, seq=seq, task_id=task.pk, type=Event.Type.CREATED, data=state,
                  created_at=created_at)
    event._state.adding = False
    transaction.on_commit(partial(publish, event.user_id, event.as_message()), robust=True)


def append_claimed(statement: ClaimStatement) -> None:
    """The processing events of a claim made by one statement, added to that statement: one
    per claimed task, in claim order per owner, as ``append_events`` appends them (each
    owner's counter moves by its number of tasks, taken in user order and locked until
    commit), with the task JSON the statement rendered. Pushed once committed, as stored."""
    counter = connection.ops.quote_name(EventCounter._meta.db_table)
    table = connection.ops.quote_name(Event._meta.db_table)
    statement.add(
        "claimed_n AS (SELECT user_id, count(*) AS n FROM claimed_state GROUP BY user_id), "
        f"claimed_seq AS (INSERT INTO {counter} (user_id, last_seq) SELECT user_id, n FROM claimed_n ORDER BY user_id "
        f"ON CONFLICT (user_id) DO UPDATE SET last_seq = {counter}.last_seq + EXCLUDED.last_seq "
        "RETURNING user_id, last_seq), "
        f"claimed_event AS (INSERT INTO {table} (user_id, seq, task_id, type, data, created_at) "
        "SELECT c.user_id, s.last_seq - n.n + row_number() OVER (PARTITION BY c.user_id ORDER BY c.priority DESC, "
        "c.turn, c.id), c.id, %s::text, c.state, %s::timestamptz FROM claimed_state c JOIN claimed_n n USING (user_id) "
        "JOIN claimed_seq s USING (user_id) RETURNING task_id, seq)",
        [Event.Type.UPDATE, statement.now],
        ["(SELECT e.seq FROM claimed_event e WHERE e.task_id = cs.id)"],
        partial(_claimed, Event.timestamp_of(statement.now)),
    )


def _claimed(stamp: str, tasks: list[GenerationTask], states: list[dict[str, Any]],
             values: list[tuple[Any, ...]]) -> None:
    messages = [(task.user_id, Event.message(Event.Type.UPDATE, seq, task.pk, stamp, state))
                for task, state, (seq,) in zip(tasks, states, values)]
    transaction.on_commit(partial(publish_many, messages), robust=True)


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
        self.failing = 0  # consecutive failed pushes: one warning per outage, not one per event
        self._sending = 0  # messages of the batch being sent now
        self._drain_task: asyncio.Task[None] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publish on ``loop`` (the ASGI server's) from now on."""
        with self._lock:
            if self._loop is not loop:
                self._stop_sender()
                self._loop, self._queue = loop, None
                loop.call_soon_threadsafe(self._start_drain, loop)

    def _stop_sender(self) -> asyncio.Task[None] | None:
        """Cancel the current loop's sender (its loop stays as it is; call under ``_lock``): a
        sender left waiting on a queue nothing feeds any more is destroyed pending. What it
        still held is in the event log."""
        task, self._drain_task = self._drain_task, None
        if task is not None and not task.done() and not task.get_loop().is_closed():
            task.get_loop().call_soon_threadsafe(task.cancel)
        return task

    def detach(self) -> asyncio.Task[None] | None:
        """Stop publishing on the attached loop (it is about to close): later pushes go
        through the publisher's own thread. Pushes still queued there are left to the event
        log, which clients read on resume. Returns that loop's sender, being cancelled:
        await it there so it ends before the loop closes."""
        with self._lock:
            task = self._stop_sender()
            self._loop, self._queue = None, None
        return task

    def _current_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None and not self._loop.is_closed():
                return self._loop
            if self._own_loop is None or self._own_loop.is_closed():
                self._own_loop = asyncio.new_event_loop()
                threading.Thread(target=self._own_loop.run_forever, name="imagegen-publish", daemon=True).start()
            self._stop_sender()
            self._loop, self._queue = self._own_loop, None
            self._own_loop.call_soon_threadsafe(self._start_drain, self._own_loop)
            return self._own_loop

    def _start_drain(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._queue is None and self._loop is loop:
            self._queue = asyncio.Queue()
            self._drain_task = loop.create_task(self._drain(self._queue))

    def submit(self, group: str, message: dict) -> None:
        loop = self._current_loop()
        try:
            loop.call_soon_threadsafe(self._enqueue, loop, group, message)
        except RuntimeError:  # the loop closed under us; the event log still has it
            self._count("dropped")

    def submit_many(self, items: list[tuple[str, dict]]) -> None:
        """``submit`` each of ``items`` (in order), with one wake-up of the loop for them all."""
        if not items:
            return
        loop = self._current_loop()
        try:
            loop.call_soon_threadsafe(self._enqueue_many, loop, items)
        except RuntimeError:
            self._count("dropped", len(items))

    def _enqueue_many(self, loop: asyncio.AbstractEventLoop, items: list[tuple[str, dict]]) -> None:
        for group, message in items:
            self._enqueue(loop, group, message)

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
        while True:
            # Whatever has queued up meanwhile goes out together (a worker's batch of events
            # arrives at once): one Redis round trip for them all where the layer allows it.
            batch = [await queue.get()]
            while len(batch) < MAX_PIPELINE and not queue.empty():
                batch.append(queue.get_nowait())
            if time.monotonic() < self.skip_until:
                self._count("skipped", len(batch))
                continue
            started = time.monotonic()
            self._sending = len(batch)  # taken from the queue, not yet handed over (flush_sync waits for it)
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT):  # unlike wait_for, no extra task per push
                    await _send(get_channel_layer(), batch)
            except Exception as exc:
                self._count("failed", len(batch))
                if time.monotonic() - started > SLOW_FAILURE:
                    self.skip_until = time.monotonic() + RETRY_AFTER_SLOW_FAILURE
                if not self.failing:
                    logger.warning("Push to %s failed (%s); clients recover it from the event log", batch[0][0], exc)
                self.failing += 1
            else:
                self._count("published", len(batch))
                if self.failing:
                    logger.warning("Pushes work again after %d failed", self.failing)
                    self.failing = 0
            self._sending = 0
            # The in-memory layer's group_send need not yield: let the consumers run
            # between pushes, or a burst overfills their channels (capacity) first.
            await asyncio.sleep(0)

    def _count(self, result: str, n: int = 1) -> None:
        self.counts[result] += n
        PUBLISHES.labels(result).inc(n)

    def flush_sync(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far was handed to the layer (tests, shutdown)."""
        loop = self._current_loop()
        done = threading.Event()

        def check() -> None:
            if (self._queue is None or self._queue.empty()) and not self._sending:
                # one more turn so the item just taken by _drain finishes its send
                loop.call_later(0.01, done.set)
            else:
                loop.call_later(0.005, check)

        loop.call_soon_threadsafe(check)
        return done.wait(timeout)


async def _send(layer: Any, batch: list[tuple[str, dict]]) -> None:
    """Hand ``batch`` to the channel layer in order: on channels-redis' pub/sub layer as one
    pipeline of PUBLISHes per Redis shard (one round trip instead of one per event: 12-16 %
    of a no-op drain went to them), else one ``group_send`` each."""
    if len(batch) > 1 and isinstance(layer, RedisPubSubChannelLayer):
        try:
            await _publish_pipelined(layer, batch)
            return
        except AttributeError:  # channels-redis internals moved (an upgrade past the pin): one by one
            logger.warning("channels-redis internals changed: pushing a batch message by message", exc_info=True)
    for i, (group, message) in enumerate(batch):
        if i:
            await asyncio.sleep(0)  # the in-memory layer: let consumers drain between messages
        await layer.group_send(group, message)


async def _publish_pipelined(layer: RedisPubSubChannelLayer, batch: list[tuple[str, dict]]) -> None:
    """What ``RedisPubSubLoopLayer.group_send`` does per message (channels-redis 4.3, pinned:
    group channel name, shard, serializer, the shard's publish lock), for a batch at once."""
    inner = layer._get_layer()
    shards: dict[int, tuple[Any, list[tuple[str, bytes]]]] = {}
    for group, message in batch:
        channel = inner._get_group_channel_name(group)
        shard = inner._get_shard(channel)
        shards.setdefault(id(shard), (shard, []))[1].append((channel, layer.serialize(message)))
    for shard, items in shards.values():
        async with shard._lock:
            shard._ensure_redis()
            pipe = shard._redis.pipeline(transaction=False)
            for channel, payload in items:
                pipe.publish(channel, payload)
            await pipe.execute()


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


def publish_many(messages: list[tuple[int, dict]]) -> None:
    """Push several committed events, ``(user_id, message)`` in order, handed over at once (never raises)."""
    committed_at = time.time()
    try:
        publisher.submit_many(
            [(group_name(user_id), {"type": "task.event", "event": message, "committed_at": committed_at})
             for user_id, message in messages]
        )
    except Exception:
        publisher._count("failed")
        logger.exception("Could not schedule %d pushes", len(messages))


def close_revoked_key(sender: Any, *, key_id: int, user_id: int, **kwargs: Any) -> None:
    """``apikeys.signals.key_revoked``: tell the user's open sockets and event streams,
    so the ones opened with that key close now (each checks the id it was opened with)."""
    try:
        publisher.submit(group_name(user_id), {"type": "key.revoked", "key_id": key_id})
    except Exception:
        logger.exception("Could not tell the connections of user %d that key %d was revoked", user_id, key_id)
