"""``/ws/notifications``: the WebSocket transport for the event log.

Transport only: the log (``Event`` rows) is the truth and a push is just the
fast path. On connect: Origin and token read and the handshake accepted on arrival
(``auth.authenticate``, before the channel layer is asked anything), admit (Origin 4003,
attempt rate 4029, token 4001, sockets per user 4029), join the user's group FIRST, replay seq > after from the
database, send ``sync_complete``, then live events (``follower.py``, shared with
the Server-Sent Events stream). Channels dispatches one message at a time per
connection, so a push that lands during a replay waits its turn and is then
dropped as already sent. A ``refresh`` frame moves the socket's expiry to a new
token's; a revoked API key closes its sockets (``key.revoked`` on the user's group).
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings
from redis.exceptions import RedisError

from .auth import arefreshed_expiry, authenticate, iso_time, query_param
from .backlog import send_backlog
from .closing import prepare_socket
from .events import group_name
from .follower import LogFollower
from .metrics import WS_CONNECTS
from .admission import CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED, CLOSE_UNAVAILABLE, admit
from .presence import presence
from .replay import SEQ_RANGE, parse_seq

logger = logging.getLogger(__name__)

class NotificationConsumer(AsyncJsonWebsocketConsumer):
    user_id: int | None = None
    follower: LogFollower | None = None
    closing = False
    _checked_at = 0.0
    _expiry: asyncio.TimerHandle | None = None
    _expiry_task: asyncio.Future | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__`` (channels 4.3) with the Origin and token check and the
        accept on arrival in front, in this one coroutine: a middleware, or a wrapper around
        ``super().__call__``, and a ``receive`` that replays the connect each keep a frame (and a
        scope copy) for as long as the socket is open (about 1.3 KB per socket, measured)."""
        first = await authenticate(scope, receive, send)
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        try:
            self.channel_name = await self.channel_layer.new_channel()
        except (RedisError, OSError) as exc:
            # Before the connect was handled: close with a code the client can act on rather than
            # an HTTP 500 (the handshake was accepted on arrival).
            logger.warning("Channel layer unavailable (%s); refusing WebSocket with %d", exc, CLOSE_UNAVAILABLE)
            WS_CONNECTS.labels("unavailable").inc()
            if scope.get("accepted"):
                await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE})
            return
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        try:
            await self.dispatch(first)
            await await_many_dispatch([receive, self.channel_receive], self.dispatch)
        except StopConsumer:
            pass

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
        # Accepted on arrival (admission.accept_on_arrival), so a refused client gets our close
        # code, not an HTTP 403.
        prepare_socket(self.base_send)  # 1009 / 1001 close frames under daphne
        code, result, self.user_id = await admit(self.scope)
        WS_CONNECTS.labels(result).inc()
        if code is not None or self.user_id is None:
            await self._close(code or CLOSE_UNAUTHORIZED)
            return
        # From here on the socket needs the user's id only: not its model instance for its whole life.
        del self.scope["user"]
        try:
            await self.channel_layer.group_add(group_name(self.user_id), self.channel_name)
        except Exception as exc:
            logger.warning("Could not join group of user %d (%s)", self.user_id, exc)
            await self._close(CLOSE_UNAVAILABLE)
            return
        self.follower = LogFollower(self.user_id, self.send_json, too_slow=self._too_slow, closing=self._is_closing)
        self._expire_at(self.scope.get("token_expires"))
        raw_after = query_param(self.scope, "after")
        after = parse_seq(raw_after) if raw_after else None
        if raw_after and after is None:
            await self._error(f"after must be {SEQ_RANGE}; sending live events only.")
        await self._send_sync(after)

    def _is_closing(self) -> bool:
        return self.closing

    def _expire_at(self, expires: float | None) -> None:
        """Close with 4001 at ``expires`` (epoch seconds; None: never, an API key)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if expires:
            delay = max(expires - time.time(), 0.0)
            self._expiry = asyncio.get_running_loop().call_later(delay, self._on_token_expired)

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
        assert self.follower is not None
        self._checked_at = time.monotonic()
        await self.follower.sync(after)

    async def task_event(self, message: dict) -> None:
        if self.closing or self.follower is None:
            return
        await self.follower.push(message)

    async def key_revoked(self, message: dict) -> None:
        """The API key this socket was opened with was revoked: close it now (4001)."""
        if message.get("key_id") is not None and message.get("key_id") == self.scope.get("api_key_id"):
            logger.info("Closing WebSocket of user %s: its API key %s was revoked", self.user_id, message["key_id"])
            await self._close(CLOSE_UNAUTHORIZED)

    async def _too_slow(self) -> bool:
        backlog = send_backlog(self.base_send)
        if backlog is None or backlog <= settings.IMAGEGEN_WS_MAX_SEND_BACKLOG_BYTES:
            return False
        logger.warning("Closing slow WebSocket of user %s with %d: %d bytes unsent", self.user_id, CLOSE_TOO_SLOW, backlog)
        await self._close(CLOSE_TOO_SLOW)
        return True

    # --- client frames -------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if self.closing or self.follower is None:
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
                await self.follower.catch_up()
            if not self.closing:
                await self.send_json({"type": "pong"})
        elif kind == "resume":
            after = parse_seq(content.get("after"))
            if after is None:
                return await self._error(f"resume needs after: {SEQ_RANGE}.")
            await self._send_sync(after)
        elif kind == "refresh":
            await self._refresh(content.get("token"))
        else:
            await self._error(f"Unknown message type {kind!r}; expected ping, resume or refresh.")

    async def _refresh(self, raw: Any) -> None:
        """In-band token refresh: the socket lives until the new token's expiry, with no
        reconnect and no replay. Anything wrong keeps the old expiry."""
        assert self.user_id is not None
        expires, problem = await arefreshed_expiry(raw, self.user_id, self.scope)
        if expires is None:
            client = self.scope.get("client") or ["?"]
            logger.warning("WebSocket refresh refused for user %s from %s: %s", self.user_id, client[0], problem)
            return await self._error(f"Token not refreshed: {problem}")
        self._expire_at(expires)
        self.scope["token_expires"] = expires
        await self.send_json({"type": "refreshed", "expires_at": iso_time(expires)})

    async def _error(self, detail: str) -> None:
        await self.send_json({"type": "error", "detail": detail})

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, separators=(",", ":"))
