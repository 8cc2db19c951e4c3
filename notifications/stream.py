"""``GET /api/events/stream/``: the event log as Server-Sent Events (``text/event-stream``).

For integrators behind proxies that strip WebSocket upgrades, and for
``EventSource``, which resumes by itself with ``Last-Event-ID``. The guarantees
are the WebSocket's, from the same code (``follower.py``): join the user's
group first, replay seq > cursor from the log, ``sync_complete``, then each
pushed event exactly once, holes filled from the log.

An async view like the long-poll: no thread per client, and no polling loop. It
waits on one channel-layer receive at a time, kept pending across keep-alives:
the pub/sub layer forgets a channel whose receive is cancelled, and would drop
the pushes that arrive until the next one. The keep-alive tick (a comment line
every ``IMAGEGEN_SSE_KEEPALIVE_SECONDS``) also reads the log once, the same
safety net as the WebSocket's ping check: a push lost while Redis was down is
delivered within one tick.

The stream ends at the access token's expiry (an API key never expires) and
when its API key is revoked, with a last ``close`` event saying why; the client
reconnects with a fresh credential and ``Last-Event-ID``, and misses nothing.
Streams count against ``IMAGEGEN_WS_MAX_SOCKETS_PER_USER`` and the connect
rates together with the user's WebSockets.

``GET /api/tasks/{id}/events/stream/`` is the same stream narrowed to one task
(``TaskEventFeed``): the owner's log from just before the task's first event
(or the cursor, if later), only that task's events (and ``sync_complete``), and
it ends after the task's final state with a ``close`` event (reason
``task_finished``). Whether the task is finished is read from its row after the
replay and at each keep-alive tick, and the log is read once more after that
read, so the final event is never cut off, even when its push was lost. A
reconnect (``Last-Event-ID``) to a finished task with nothing new is a 204,
which tells EventSource to stop reconnecting.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import Max, Min
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from generation.models import GenerationTask

from .events import group_name
from .follower import LogFollower
from .metrics import WS_CONNECTS
from .models import Event
from .presence import presence
from .ratelimit import aconnect_allowed
from .replay import SEQ_RANGE, alast_seq, parse_seq
from .views import Caller, authenticate, error

logger = logging.getLogger(__name__)

aauthenticate = sync_to_async(authenticate, thread_sensitive=False)


def sse(data: dict[str, Any], *, event: str, id: int | None = None) -> str:
    """One event in the text/event-stream format (JSON has no raw newlines, so one data line)."""
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def frame(message: dict[str, Any]) -> str:
    """A log event (``id`` = its seq) or ``sync_complete`` (``id`` = last_seq, so an
    EventSource that reconnects before any event resumes from there)."""
    if message["type"] == "sync_complete":
        return sse(message, event="sync_complete", id=message["last_seq"])
    return sse(message, event=message["type"], id=message["seq"])


def cursor(request: HttpRequest) -> tuple[int | None, str | None]:
    """``Last-Event-ID`` (what EventSource sends on reconnect) wins over ``?after=``;
    neither: live events only. Each must be a valid seq when given. Returns (cursor, error)."""
    values: dict[str, int | None] = {}
    for name, raw in (("Last-Event-ID", request.headers.get("Last-Event-ID")), ("after", request.GET.get("after"))):
        if raw is None or (name == "Last-Event-ID" and raw.strip() == ""):
            continue
        values[name] = parse_seq(raw.strip())
        if values[name] is None:
            return None, f"{name} must be {SEQ_RANGE}."
    return values.get("Last-Event-ID", values.get("after")), None


async def _caller_and_cursor(request: HttpRequest) -> tuple[Caller, int | None] | HttpResponseBase:
    """What every stream checks first: a GET, an authenticated caller, a valid cursor."""
    if request.method != "GET":
        return error(405, f'Method "{request.method}" not allowed.', Allow="GET")
    caller, denied = await aauthenticate(request, query=True)
    if caller is None:
        assert denied is not None
        return denied
    after, problem = cursor(request)
    if problem is not None:
        return error(400, problem)
    return caller, after


async def events_stream(request: HttpRequest) -> HttpResponseBase:
    opened = await _caller_and_cursor(request)
    if isinstance(opened, HttpResponseBase):
        return opened
    caller, after = opened
    return await _open(request, EventFeed(caller, after))


def _task_bounds(user_id: int, task_id: int) -> tuple[str | None, int | None, int | None]:
    """The task's status (None: no such task of this user) and the seqs of its first and
    last events still in the log (None when none is kept)."""
    status = GenerationTask.objects.filter(pk=task_id, user_id=user_id).values_list("status", flat=True).first()
    if status is None:
        return None, None, None
    seqs = Event.objects.filter(user_id=user_id, task_id=task_id).aggregate(first=Min("seq"), last=Max("seq"))
    return status, seqs["first"], seqs["last"]


atask_bounds = database_sync_to_async(_task_bounds, thread_sensitive=False)


async def task_events_stream(request: HttpRequest, task_id: int) -> HttpResponseBase:
    """``GET /api/tasks/{id}/events/stream/``: one task's events, ending after its final state."""
    opened = await _caller_and_cursor(request)
    if isinstance(opened, HttpResponseBase):
        return opened
    caller, after = opened
    status, first, last = await atask_bounds(caller.user.pk, task_id)
    if status is None:
        return error(404, "No GenerationTask matches the given query.")  # another user's is no different
    if after is not None and status in GenerationTask.FINISHED and (last is None or last <= after):
        # The client has seen the end already (an EventSource reconnecting): 204 stops it.
        return HttpResponse(status=204)
    # Without a cursor, the task's whole kept history; either way, not the user's older events.
    start = after or 0
    if first is not None:
        start = max(start, first - 1)
    else:
        start = max(start, await alast_seq(caller.user.pk))  # none kept: nothing of it to replay
    return await _open(request, TaskEventFeed(caller, start, task_id))


async def _open(request: HttpRequest, feed: EventFeed) -> HttpResponseBase:
    """Admit a stream (the user's connect rate and open-connection cap) and answer it."""
    user_id = feed.caller.user.pk
    if not await aconnect_allowed(request.META.get("REMOTE_ADDR"), user_id):
        WS_CONNECTS.labels("rate_limited").inc()
        return error(429, "Too many connection attempts; retry in a minute.", Retry_After="60")
    if not await presence.try_open(user_id, settings.IMAGEGEN_WS_MAX_SOCKETS_PER_USER):
        WS_CONNECTS.labels("too_many_sockets").inc()
        return error(429, "Too many open connections for this user.", Retry_After="10")
    WS_CONNECTS.labels("accepted").inc()
    response = StreamingHttpResponse(feed, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


class EventFeed:
    """The body of one stream. It owns the presence slot taken in the view and gives it
    back when the stream ends, however it ends (client gone, expiry, revoke, error)."""

    def __init__(self, caller: Caller, after: int | None) -> None:
        self.caller = caller
        self.after = after
        self._released = False
        #: The last event queued was the end of what this stream follows (``TaskEventFeed``:
        #: the task's final state), so a live push that queued it ends the stream.
        self.final_seen = False
        #: The stream ends after what is queued.
        self.ended = False

    # --- What a narrower stream changes (``TaskEventFeed``) ----------------------------------
    def wanted(self, message: dict[str, Any]) -> bool:
        """Whether a message of the user's log goes to this client."""
        return True

    async def finished(self) -> bool:
        """Checked after the replay and at each keep-alive tick: True ends the stream
        (after the log is read once more)."""
        return False

    def _release(self) -> None:
        if not self._released:
            self._released = True
            presence.close(self.caller.user.pk)

    def __del__(self) -> None:
        # Never iterated (the client left between the view's answer and the first
        # chunk): still give the slot back.
        if not self._released:
            try:
                self._release()
            except Exception:
                pass

    async def _settle(self, follower: LogFollower) -> None:
        if await self.finished():
            # The row said finished: the event of that change committed with it, so one
            # more read of the log delivers it even if its push was lost.
            await follower.catch_up()
            self.ended = True
        else:
            # Not finished now: a final state queued before this read was followed by a
            # retry, whose event is still to come; only a later final state ends it.
            self.final_seen = False

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for chunk in self._run():
                yield chunk
        finally:
            self._release()

    async def _run(self) -> AsyncIterator[str]:
        user_id = self.caller.user.pk
        layer = get_channel_layer()
        group = group_name(user_id)
        try:
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
        except Exception as exc:
            logger.warning("Event stream of user %d cannot join its group (%s); ending it", user_id, exc)
            yield "retry: 5000\n" + sse({"type": "close", "reason": "unavailable"}, event="close")
            return
        out: list[str] = []

        async def send(message: dict[str, Any]) -> None:
            if self.wanted(message):
                out.append(frame(message))

        follower = LogFollower(user_id, send)
        pending: asyncio.Future[dict] | None = None
        try:
            await follower.sync(self.after)
            await self._settle(follower)
            yield "".join(out) + (FINISHED_FRAME if self.ended else "")
            out.clear()
            if self.ended:
                return
            keepalive = settings.IMAGEGEN_SSE_KEEPALIVE_SECONDS
            while True:
                timeout = keepalive
                if self.caller.expires is not None:
                    remaining = self.caller.expires - time.time()
                    if remaining <= 0:
                        yield sse({"type": "close", "reason": "token_expired"}, event="close")
                        return
                    timeout = min(timeout, remaining)
                if pending is None:
                    pending = asyncio.ensure_future(layer.receive(channel))
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if not done:
                    if self.caller.expires is None or self.caller.expires > time.time():
                        await follower.catch_up()  # a push lost while the layer was down
                        await self._settle(follower)
                        yield "".join(out) + (FINISHED_FRAME if self.ended else ": keep-alive\n\n")
                        out.clear()
                        if self.ended:
                            return
                    continue
                message, pending = pending.result(), None
                if message.get("type") == "key.revoked":
                    if self.caller.api_key_id is not None and message.get("key_id") == self.caller.api_key_id:
                        logger.info("Ending event stream of user %d: its API key was revoked", user_id)
                        yield sse({"type": "close", "reason": "key_revoked"}, event="close")
                        return
                    continue
                if message.get("type") == "task.event":
                    await follower.push(message)
                    self.ended = self.final_seen
                    if out:
                        yield "".join(out) + (FINISHED_FRAME if self.ended else "")
                        out.clear()
                    if self.ended:
                        return
        finally:
            if pending is not None:
                # Cancelling the pending receive is also what releases the pub/sub channel.
                pending.cancel()
                try:
                    await pending
                except BaseException:
                    pass
            try:
                await layer.group_discard(group, channel)
            except Exception:
                pass


FINISHED_FRAME = sse({"type": "close", "reason": "task_finished"}, event="close")


class TaskEventFeed(EventFeed):
    """One task's events from the owner's log; ends after the task's final state."""

    def __init__(self, caller: Caller, after: int, task_id: int) -> None:
        super().__init__(caller, after)
        self.task_id = task_id

    def wanted(self, message: dict[str, Any]) -> bool:
        if message["type"] == "sync_complete":
            return True
        if message.get("task_id") != self.task_id:
            return False
        # A retry after a failure is a later event back to pending: only the last one counts.
        self.final_seen = message["data"].get("status") in GenerationTask.FINISHED
        return True

    async def finished(self) -> bool:
        status, _, _ = await atask_bounds(self.caller.user.pk, self.task_id)
        return status is None or status in GenerationTask.FINISHED  # deleted by retention: nothing more comes
