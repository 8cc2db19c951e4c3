"""Handing one connection its user's log exactly once, in order: shared by the
WebSocket consumer and the Server-Sent Events stream.

The connection joins the user's group FIRST, then calls :meth:`LogFollower.sync`
(replay seq > after from the database, then ``sync_complete``), then feeds every
pushed event to :meth:`LogFollower.push`. A push at or below ``last_sent`` was
replayed already (or is a duplicate) and is dropped; one beyond ``last_sent + 1``
means a push was lost or overtaken (workers publish independently), so the hole
is filled from the log first and the client never sees a gap.
"""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from .metrics import GAP_FILLS, PUSH_LATENCY_SECONDS, REPLAY_SIZE, WS_RESUMES
from .replay import alast_seq, aread_page

Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _never_too_slow() -> bool:
    return False


class LogFollower:
    """``send`` writes one message to the client; ``too_slow`` (checked after sends)
    closes a client that cannot keep up and returns True; ``closing`` says whether
    the connection is going (replays stop then)."""

    # One per open socket, for its whole life: no instance dict.
    __slots__ = ("user_id", "last_sent", "_send", "_too_slow", "_closing")

    def __init__(self, user_id: int, send: Send, *, too_slow: Callable[[], Awaitable[bool]] = _never_too_slow,
                 closing: Callable[[], bool] = lambda: False) -> None:
        self.user_id = user_id
        self.last_sent = 0
        self._send = send
        self._too_slow = too_slow
        self._closing = closing

    async def sync(self, after: int | None) -> None:
        """Replay after ``after`` (or skip history when None), then ``sync_complete``."""
        if after is None:
            self.last_sent = await alast_seq(self.user_id)
            recovered: bool | None = True
        else:
            WS_RESUMES.inc()
            recovered = await self.replay(after)
        if recovered is not None:
            await self._send({"type": "sync_complete", "last_seq": self.last_sent, "recovered": recovered})

    async def replay(self, after: int) -> bool | None:
        """Send every logged event after ``after`` in pages; returns ``recovered``
        (None when the client was closed as too slow, or is going)."""
        recovered: bool | None = None
        sent = 0
        cursor = after
        while not self._closing():
            page = await aread_page(self.user_id, cursor)
            recovered = page.recovered if recovered is None else recovered
            for event in page.events:
                await self._send(event)
            sent += len(page.events)
            cursor = self.last_sent = page.last_seq
            if await self._too_slow() or not page.has_more:
                break
        REPLAY_SIZE.observe(sent)
        return None if self._closing() else recovered

    async def catch_up(self) -> None:
        """Send what the log has beyond last_sent (a lost or overtaken push)."""
        if await self.replay(self.last_sent) is False:
            # The missing events were purged meanwhile: the client must reload.
            await self._send({"type": "sync_complete", "last_seq": self.last_sent, "recovered": False})

    async def push(self, message: dict[str, Any]) -> None:
        """One ``task.event`` message from the channel layer."""
        event = message["event"]
        if event["seq"] <= self.last_sent:
            return  # replayed already, or a duplicate push
        if event["seq"] > self.last_sent + 1:
            GAP_FILLS.inc()
            # The log was read after this event committed, so the fill includes it.
            await self.catch_up()
            return
        await self._send(event)
        self.last_sent = event["seq"]
        if "committed_at" in message:
            PUSH_LATENCY_SECONDS.observe(max(time.time() - message["committed_at"], 0.0))
        await self._too_slow()
