"""``/ws/notifications``: the WebSocket transport for the event log.

Transport only: the log (``Event`` rows) is the truth and a push is just the
fast path. On connect: admit (Origin 4003, attempt rate 4029, token 4001,
sockets per user 4029), join the user's group FIRST, replay seq > after from the
database, send ``sync_complete``, then live events. Channels dispatches one
message at a time per connection, so a push that lands during a replay waits
its turn and is then dropped as already sent (seq <= last_sent). A push beyond
last_sent + 1 means one was lost or overtaken (workers publish independently):
the hole is filled from the database first, so a client never sees a gap.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from .auth import query_param
from .backlog import send_backlog
from .closing import prepare_socket
from .events import group_name
from .metrics import GAP_FILLS, PUSH_LATENCY_SECONDS, REPLAY_SIZE, WS_CONNECTS, WS_RESUMES
from .admission import CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED, CLOSE_UNAVAILABLE, admit
from .presence import presence
from .replay import SEQ_RANGE, alast_seq, aread_page, parse_seq

logger = logging.getLogger(__name__)

class NotificationConsumer(AsyncJsonWebsocketConsumer):
    user_id: int | None = None
    last_sent = 0
    closing = False
    _checked_at = 0.0
    _expiry: asyncio.TimerHandle | None = None
    _expiry_task: asyncio.Future | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (RedisError, OSError) as exc:
            if hasattr(self, "channel_name"):
                raise
            # new_channel() failed before the handshake was read: answer it with a
            # close code the client can act on rather than an HTTP 500.
            logger.warning("Channel layer unavailable (%s); refusing WebSocket with %d", exc, CLOSE_UNAVAILABLE)
            WS_CONNECTS.labels("unavailable").inc()
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE})

    async def dispatch(self, message: dict) -> None:
        # Channels' dispatch first hops to Django's one sync thread to close stale
        # connections, for every pushed event. Our database work runs in helpers
        # that do that in their own thread, so skip the hop.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connection lifecycle ----------------------------------------------------------
    async def websocket_connect(self, message: dict) -> None:
        # Accept first, so a refused client gets our close code, not an HTTP 403.
        prepare_socket(self.base_send)  # 1009 / 1001 close frames under daphne
        await self.accept()
        code, result, self.user_id = await admit(self.scope)
        WS_CONNECTS.labels(result).inc()
        if code is not None or self.user_id is None:
            await self._close(code or CLOSE_UNAUTHORIZED)
            return
        try:
            await self.channel_layer.group_add(group_name(self.user_id), self.channel_name)
        except Exception as exc:
            logger.warning("Could not join group of user %d (%s)", self.user_id, exc)
            await self._close(CLOSE_UNAVAILABLE)
            return
        expires = self.scope.get("token_expires")
        if expires:
            delay = max(expires - time.time(), 0.0)
            self._expiry = asyncio.get_running_loop().call_later(delay, self._on_token_expired)
        raw_after = query_param(self.scope, "after")
        after = parse_seq(raw_after) if raw_after else None
        if raw_after and after is None:
            await self._error(f"after must be {SEQ_RANGE}; sending live events only.")
        await self._send_sync(after)

    def _on_token_expired(self) -> None:
        self._expiry_task = asyncio.ensure_future(self._close(CLOSE_UNAUTHORIZED))

    async def _close(self, code: int) -> None:
        if not self.closing:
            self.closing = True
            await self.close(code)

    async def websocket_disconnect(self, message: dict) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self.user_id is not None:
            presence.close(self.user_id)
            try:
                await self.channel_layer.group_discard(group_name(self.user_id), self.channel_name)
            except Exception as exc:  # the layer drops a dead channel's membership itself
                logger.warning("Could not leave group of user %d (%s)", self.user_id, exc)
        raise StopConsumer()

    # --- sending the log ------------------------------------------------------------------
    async def _send_sync(self, after: int | None) -> None:
        """Replay after ``after`` (or skip history when None), then ``sync_complete``."""
        assert self.user_id is not None
        self._checked_at = time.monotonic()
        if after is None:
            self.last_sent = await alast_seq(self.user_id)
            recovered: bool | None = True
        else:
            WS_RESUMES.inc()
            recovered = await self._replay(after)
        if recovered is not None:
            await self.send_json({"type": "sync_complete", "last_seq": self.last_sent, "recovered": recovered})

    async def _replay(self, after: int) -> bool | None:
        """Send every logged event after ``after`` in pages; returns ``recovered``
        (None when the client was closed as too slow)."""
        assert self.user_id is not None
        recovered: bool | None = None
        sent = 0
        cursor = after
        while not self.closing:
            page = await aread_page(self.user_id, cursor)
            recovered = page.recovered if recovered is None else recovered
            for event in page.events:
                await self.send_json(event)
            sent += len(page.events)
            cursor = self.last_sent = page.last_seq
            if await self._too_slow() or not page.has_more:
                break
        REPLAY_SIZE.observe(sent)
        return None if self.closing else recovered

    async def _catch_up(self) -> None:
        """Send what the log has beyond last_sent (a lost or overtaken push)."""
        if await self._replay(self.last_sent) is False:
            # The missing events were purged meanwhile: the client must reload.
            await self.send_json({"type": "sync_complete", "last_seq": self.last_sent, "recovered": False})

    async def task_event(self, message: dict) -> None:
        if self.closing or self.user_id is None:
            return
        event = message["event"]
        if event["seq"] <= self.last_sent:
            return  # replayed already, or a duplicate push
        if event["seq"] > self.last_sent + 1:
            GAP_FILLS.inc()
            # The log was read after this event committed, so the fill includes it.
            await self._catch_up()
            return
        await self.send_json(event)
        self.last_sent = event["seq"]
        if "committed_at" in message:
            PUSH_LATENCY_SECONDS.observe(max(time.time() - message["committed_at"], 0.0))
        await self._too_slow()

    async def _too_slow(self) -> bool:
        backlog = send_backlog(self.base_send)
        if backlog is None or backlog <= settings.IMAGEGEN_WS_MAX_SEND_BACKLOG_BYTES:
            return False
        logger.warning("Closing slow WebSocket of user %s with %d: %d bytes unsent", self.user_id, CLOSE_TOO_SLOW, backlog)
        await self._close(CLOSE_TOO_SLOW)
        return True

    # --- client frames -------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if self.closing or self.user_id is None:
            return
        limit = settings.IMAGEGEN_WS_MAX_FRAME_BYTES
        if text_data is None:
            return await self._error("Send JSON text frames.")
        if len(text_data) > limit or len(text_data.encode()) > limit:
            return await self._error(f"Frame too large (at most {limit} bytes).")
        try:
            content = json.loads(text_data)
        except ValueError:
            return await self._error("Malformed JSON.")
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ping":
            # A cheap moment to look for pushes lost while idle (at most every few s).
            if time.monotonic() - self._checked_at >= settings.IMAGEGEN_WS_PING_CHECK_SECONDS:
                self._checked_at = time.monotonic()
                await self._catch_up()
            if not self.closing:
                await self.send_json({"type": "pong"})
        elif kind == "resume":
            after = parse_seq(content.get("after"))
            if after is None:
                return await self._error(f"resume needs after: {SEQ_RANGE}.")
            await self._send_sync(after)
        else:
            await self._error(f"Unknown message type {kind!r}; expected ping or resume.")

    async def _error(self, detail: str) -> None:
        await self.send_json({"type": "error", "detail": detail})

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, separators=(",", ":"))
