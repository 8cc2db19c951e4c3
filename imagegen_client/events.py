"""Following a user's task events without losing or repeating one.

:class:`EventStream` ties three parts together:

* :mod:`~imagegen_client.sequencing` decides what to hand out (resume cursor,
  duplicates, gaps, resets) and does no I/O;
* :mod:`~imagegen_client.websocket` connects to ``/ws/notifications?after=<cursor>``:
  the server replays what was missed, sends ``sync_complete``, then live events;
  before the access token expires it is refreshed in band (no reconnect);
* :mod:`~imagegen_client.sse` is the same over Server-Sent Events
  (``transport="sse"``, ``/api/events/stream/`` with ``Last-Event-ID``);
* :mod:`~imagegen_client.eventlog` reads ``GET /api/events/`` to fill a gap, and
  long-polls it (``wait=25``) when the WebSocket cannot be had (no route, a
  proxy that strips Upgrade, or repeated failures), trying the WebSocket again later.

A dropped connection, a server answering 5xx or 429, or one not answering at
all is retried with exponential backoff and full jitter (never sooner than
its ``Retry-After``), resuming from the cursor, so nothing is lost or repeated.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import AsyncGenerator, Awaitable, Callable, Literal, TypedDict

import httpx

from .auth import TokenSource
from .backoff import Backoff
from .errors import Disconnected, ImagegenError, StreamError
from .eventlog import EventLog
from .sequencing import Item, Sequencer, Step
from .sse import stream_messages
from .websocket import events_url, messages, open_connection, refresh_in_band

__all__ = ["Backoff", "Event", "EventData", "EventStream", "StreamError", "TERMINAL_STATUSES"]

logger = logging.getLogger(__name__)


class EventData(TypedDict):
    status: str
    progress: int
    result_image_url: str | None
    elapsed_time: float | None
    estimated_remaining_seconds: int | None
    error_code: str | None
    error_message: str | None
    updated_at: str


class Event(TypedDict):
    """One task change, as the server sends it (``type`` is ``task_*``).

    The stream also yields ``{"type": "reset", "last_seq": M}`` when the server
    could not replay everything (``recovered: false``, events purged by
    retention): reload the task list, then go on reading.
    """

    type: str
    seq: int
    task_id: int
    timestamp: str
    data: EventData


TERMINAL_STATUSES = frozenset({"completed", "failed", "canceled"})


class EventStream:
    """Async iterator over one user's events with ``seq > after``; see the module docstring.

    ``http`` is an ``httpx.AsyncClient`` whose ``base_url`` is the server and
    whose auth signs its requests; ``tokens`` gives the WebSocket its access
    token. :meth:`Client.events <imagegen_client.Client.events>` builds both.
    ``after=None`` means "from the moment iteration starts". It never ends on
    its own: stop iterating (``break``) to close it; with ``close_http`` the
    stream then closes ``http`` too.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenSource,
        after: int | None = None,
        *,
        close_http: bool = False,
        ping_interval: float = 25.0,
        pong_grace: float = 10.0,
        fallback_after: int = 4,
        retry_websocket_after: float = 300.0,
        poll_wait: int = 25,
        transport: Literal["websocket", "sse"] = "websocket",
        sse_idle_timeout: float = 45.0,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.http = http
        self.tokens = tokens
        self.after = after
        self.close_http = close_http
        self.ping_interval = ping_interval
        self.pong_grace = pong_grace
        self.fallback_after = fallback_after
        self.retry_websocket_after = retry_websocket_after
        self.poll_wait = poll_wait
        #: The push transport: "websocket" or "sse" (Server-Sent Events); long-poll is the fallback of both.
        self.transport = transport
        self.sse_idle_timeout = sse_idle_timeout
        self.backoff = backoff or Backoff()
        self.sequencer = Sequencer()
        self.log = EventLog(http)
        #: "websocket", "sse" or "poll": which transport delivered the last batch (for tests and logs).
        self.mode: Literal["websocket", "sse", "poll"] = transport
        self.connects = 0
        self._sleep = sleep
        self._synced = False
        self._token = ""  # the one the last WebSocket connect used

    @property
    def last_seq(self) -> int:
        return self.sequencer.cursor

    def __aiter__(self) -> AsyncGenerator[Item, None]:
        return self._run()

    async def _run(self) -> AsyncGenerator[Item, None]:
        try:
            self.sequencer.cursor = self.after if self.after is not None else await self._now()
            failures = 0
            while True:
                if self.mode == "poll":
                    async with aclosing(self._poll_for(self.retry_websocket_after)) as polled:
                        async for item in polled:
                            yield item
                    self.mode = self.transport
                    failures = 0
                    continue
                try:
                    async with aclosing(self._websocket() if self.transport == "websocket"
                                        else self._sse()) as pushed:
                        async for item in pushed:
                            yield item
                    raise Disconnected("server closed the connection")
                except Disconnected as exc:
                    self.sequencer.reset_transport()  # what was held is replayed on resume
                    self.backoff.closed()
                    if self._synced:
                        failures = 0  # that connection worked; count failures afresh
                    self._synced = False
                    if exc.auth:
                        # Expired access token (4001): renew it and come straight back.
                        await self._renew()
                        continue
                    failures += 1
                    if exc.fallback or failures >= self.fallback_after:
                        logger.info("%s unavailable (%s); long-polling /api/events/", self.transport, exc)
                        self.mode = "poll"
                        continue
                    await self._back_off("WebSocket lost (%s); reconnecting in %.1fs", exc, exc.retry_after)
        finally:
            if self.close_http:
                await self.http.aclose()

    async def _now(self) -> int:
        """The resume point for "from now on": the snapshot's last_seq, so nothing after it is missed."""
        while True:
            try:
                last = await self.log.last_seq()
            except Disconnected as exc:
                await self._back_off("Cannot read the newest seq (%s); retrying in %.1fs", exc, exc.retry_after)
                continue
            self.backoff.succeeded()
            return last

    async def _renew(self) -> None:
        try:
            await self.tokens.renew(self._token)
        except httpx.TransportError as error:
            await self._back_off("Cannot renew the access token (%r); retrying in %.1fs", error)
        except ImagegenError as error:
            if not error.temporary:
                raise
            await self._back_off("Cannot renew the access token (%s); retrying in %.1fs", error, error.retry_after)

    async def _back_off(self, message: str, error: BaseException, retry_after: float = 0.0) -> None:
        """Wait the backoff's next delay (never less than the server's ``Retry-After``), saying why."""
        delay = self.backoff.next_delay(retry_after)
        logger.info(message, error, delay)
        await self._sleep(delay)

    # --- WebSocket ---------------------------------------------------------------------
    async def _websocket(self) -> AsyncGenerator[Item, None]:
        try:
            self._token = await self.tokens.token()
        except httpx.TransportError as exc:
            raise Disconnected(f"cannot renew the access token: {exc!r}") from None
        except ImagegenError as exc:
            if not exc.temporary:
                raise
            raise Disconnected(f"token renewal answered {exc.status_code}", retry_after=exc.retry_after) from None
        url = events_url(self.http.base_url, token=self._token, after=self.sequencer.cursor,
                         param=self.tokens.query_param)
        ws = await open_connection(url)
        self.connects += 1
        self.backoff.opened()
        refresher = (asyncio.create_task(refresh_in_band(ws, self._token, self.tokens.token))
                     if self.tokens.query_param == "token" else None)
        try:
            async with aclosing(messages(ws, ping_interval=self.ping_interval,
                                         pong_grace=self.pong_grace)) as incoming:
                async with aclosing(self._follow(incoming)) as out:
                    async for item in out:
                        yield item
        finally:
            if refresher is not None:
                refresher.cancel()
            await ws.close()

    # --- Server-Sent Events ----------------------------------------------------------------
    async def _sse(self) -> AsyncGenerator[Item, None]:
        self.connects += 1
        async with aclosing(self._opened(stream_messages(self.http, after=self.sequencer.cursor,
                                                         idle_timeout=self.sse_idle_timeout))) as incoming:
            async with aclosing(self._follow(incoming)) as out:
                async for item in out:
                    yield item

    async def _opened(self, incoming: AsyncGenerator[Item, None]) -> AsyncGenerator[Item, None]:
        """``incoming``, telling the backoff the connection is up at its first message."""
        async with aclosing(incoming):
            first = True
            async for message in incoming:
                if first:
                    self.backoff.opened()
                    first = False
                yield message

    async def _follow(self, incoming: AsyncGenerator[Item, None]) -> AsyncGenerator[Item, None]:
        """Hold the replay until ``sync_complete``, then hand out live events (either transport)."""
        replay: list[Item] = []
        async for message in incoming:
            if message.get("type") == "sync_complete":
                self._synced = True
                async with aclosing(self._steps(self.sequencer.synced(replay, message))) as out:
                    async for item in out:
                        yield item
                replay = []
            elif "seq" in message:
                if not self._synced:
                    replay.append(message)
                    continue
                async with aclosing(self._steps(self.sequencer.live(message))) as out:
                    async for item in out:
                        yield item

    async def _steps(self, step: Step) -> AsyncGenerator[Item, None]:
        """Hand out a step's items and do the fetches it asks for (a 5xx here reconnects)."""
        while True:
            for item in step.items:
                yield item
            if not step.fetch:
                return
            # A push was lost (or the server is ahead of its replay): read the hole from the log.
            step = self.sequencer.page(await self.log.page(after=self.sequencer.cursor, wait=0))

    # --- Long-poll -----------------------------------------------------------------------
    async def _poll_for(self, seconds: float) -> AsyncGenerator[Item, None]:
        """Long-poll ``/api/events/`` for about ``seconds``, then let the caller retry the WebSocket."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.mode = "poll"
            try:
                page = await self.log.page(after=self.sequencer.cursor, wait=self.poll_wait)
            except Disconnected as exc:
                await self._back_off("Long-poll failed (%s); retrying in %.1fs", exc, exc.retry_after)
                continue
            self.backoff.succeeded()
            # A page with has_more is followed at once: the next poll returns without waiting.
            for item in self.sequencer.page(page).items:
                yield item
