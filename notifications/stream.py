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
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse

from .events import group_name
from .follower import LogFollower
from .metrics import WS_CONNECTS
from .presence import presence
from .ratelimit import aconnect_allowed
from .replay import SEQ_RANGE, parse_seq
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


async def events_stream(request: HttpRequest) -> HttpResponseBase:
    if request.method != "GET":
        return error(405, f'Method "{request.method}" not allowed.', Allow="GET")
    caller, denied = await aauthenticate(request, query=True)
    if caller is None:
        assert denied is not None
        return denied
    after, problem = cursor(request)
    if problem is not None:
        return error(400, problem)
    if not await aconnect_allowed(request.META.get("REMOTE_ADDR"), caller.user.pk):
        WS_CONNECTS.labels("rate_limited").inc()
        return error(429, "Too many connection attempts; retry in a minute.", Retry_After="60")
    if not await presence.try_open(caller.user.pk, settings.IMAGEGEN_WS_MAX_SOCKETS_PER_USER):
        WS_CONNECTS.labels("too_many_sockets").inc()
        return error(429, "Too many open connections for this user.", Retry_After="10")
    WS_CONNECTS.labels("accepted").inc()
    response = StreamingHttpResponse(EventFeed(caller, after), content_type="text/event-stream")
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
            out.append(frame(message))

        follower = LogFollower(user_id, send)
        pending: asyncio.Future[dict] | None = None
        try:
            await follower.sync(self.after)
            yield "".join(out)
            out.clear()
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
                        yield "".join(out) + ": keep-alive\n\n"
                        out.clear()
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
                    if out:
                        yield "".join(out)
                        out.clear()
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
