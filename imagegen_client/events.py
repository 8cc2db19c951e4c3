"""Following a user's task events without losing or repeating one.

The server numbers each user's events 1, 2, 3, ... (``seq``) with no gaps, so
the client only has to remember the last seq it handed out:

* it connects to ``/ws/notifications?after=<last>`` and the server replays
  what was missed, then sends ``sync_complete``, then live events;
* an event with ``seq <= last`` is a duplicate (replay racing a push) and is
  dropped; one with ``seq > last + 1`` means a push was lost, and the missing
  range is fetched from ``GET /api/events/?after=<last>`` before going on;
* a dropped connection is retried with exponential backoff and full jitter;
  a connection that stays silent past a ping round trip is presumed dead
  (a half-open TCP connection never reports an error on its own);
* when the WebSocket cannot be had (no route, a proxy that strips Upgrade, or
  repeated failures) it long-polls ``/api/events/?wait=25`` instead and tries
  the WebSocket again later.

The seed's old client lost updates exactly here: it reconnected without a
resume point and never noticed missing messages.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import TYPE_CHECKING, Any, AsyncGenerator, AsyncIterator, Callable, Literal, TypedDict
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

if TYPE_CHECKING:
    from .client import Client

logger = logging.getLogger(__name__)

# WebSocket close codes of the contract.
CLOSE_AUTH = 4001
CLOSE_ORIGIN = 4003
CLOSE_RATE = 4029


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


class StreamError(Exception):
    """The stream cannot continue (for example the server refused our Origin)."""


class _Reconnect(Exception):
    """Internal: the current transport ended; ``auth`` says a token refresh is due."""

    def __init__(self, reason: str, *, auth: bool = False, fallback: bool = False) -> None:
        super().__init__(reason)
        self.auth = auth
        self.fallback = fallback


class Backoff:
    """Exponential backoff with full jitter: sleep ``U(0, min(cap, base * 2**n))``.

    Full jitter spreads a thundering herd of clients reconnecting after a server
    restart (the seed's risk 2) far better than a fixed delay plus a little noise.
    The attempt count resets only once a connection has stayed up ``stable_after``
    seconds, so a server that accepts and at once drops us is still backed off.
    """

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        stable_after: float = 60.0,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = base
        self.cap = cap
        self.stable_after = stable_after
        self.attempts = 0
        self._rng = rng
        self._clock = clock
        self._opened_at: float | None = None

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempts, 30))
        self.attempts += 1
        return self._rng() * ceiling

    def opened(self) -> None:
        self._opened_at = self._clock()

    def closed(self) -> None:
        if self._opened_at is not None and self._clock() - self._opened_at >= self.stable_after:
            self.attempts = 0
        self._opened_at = None


class SeqTracker:
    """Remembers the last seq handed out and classifies what arrives next."""

    def __init__(self, last: int) -> None:
        self.last = last

    def classify(self, seq: int) -> Literal["duplicate", "next", "gap"]:
        if seq <= self.last:
            return "duplicate"
        return "next" if seq == self.last + 1 else "gap"


class EventStream:
    """Async iterator over one user's events after ``after``; see the module docstring.

    Create it through :meth:`Client.events`. It never ends on its own: stop
    iterating (``break``) to close it.
    """

    def __init__(
        self,
        client: Client,
        after: int | None = None,
        *,
        ping_interval: float = 25.0,
        pong_grace: float = 10.0,
        fallback_after: int = 4,
        retry_websocket_after: float = 300.0,
        poll_wait: int = 25,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.after = after
        self.ping_interval = ping_interval
        self.pong_grace = pong_grace
        self.fallback_after = fallback_after
        self.retry_websocket_after = retry_websocket_after
        self.poll_wait = poll_wait
        self.backoff = backoff or Backoff()
        self.tracker = SeqTracker(0)
        #: "websocket" or "poll": which transport delivered the last batch (for tests and logs).
        self.mode: Literal["websocket", "poll"] = "websocket"
        self.connects = 0
        self._synced = False
        self._http: httpx.AsyncClient | None = None

    @property
    def last_seq(self) -> int:
        return self.tracker.last

    def __aiter__(self) -> AsyncGenerator[dict[str, Any], None]:
        return self._run()

    async def _run(self) -> AsyncGenerator[dict[str, Any], None]:
        self._http = self.client._async_http()
        try:
            if self.after is None:
                # "From now on": the snapshot's last_seq, so nothing after it can be missed.
                self.tracker.last = await asyncio.to_thread(self.client.last_seq)
            else:
                self.tracker.last = self.after
            failures = 0
            while True:
                if self.mode == "poll":
                    async for item in self._poll_for(self.retry_websocket_after):
                        yield item
                    self.mode = "websocket"
                    failures = 0
                    continue
                try:
                    async for item in self._websocket():
                        yield item
                    raise _Reconnect("server closed the connection")
                except _Reconnect as exc:
                    self.backoff.closed()
                    if self._synced:
                        failures = 0  # that connection worked; count failures afresh
                    self._synced = False
                    if exc.auth:
                        # Expired access token (4001): refresh and come straight back.
                        await asyncio.to_thread(self.client.refresh)
                        continue
                    failures += 1
                    if exc.fallback or failures >= self.fallback_after:
                        logger.info("WebSocket unavailable (%s); long-polling /api/events/", exc)
                        self.mode = "poll"
                        continue
                    delay = self.backoff.next_delay()
                    logger.info("WebSocket lost (%s); reconnecting in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
        finally:
            await self._http.aclose()

    # --- WebSocket transport -----------------------------------------------------------
    def _ws_url(self) -> str:
        base = self.client.base_url.rstrip("/")
        scheme, rest = base.split("://", 1)
        query = urlencode({"token": self.client.access_token(), "after": self.tracker.last})
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws/notifications?{query}"

    async def _websocket(self) -> AsyncIterator[dict[str, Any]]:
        try:
            # Protocol-level pings off: the contract's app-level ping proves the
            # consumer (not just the TCP peer) is alive.
            ws = await connect(self._ws_url(), ping_interval=None, open_timeout=10, max_size=4 * 2**20)
        except InvalidStatus as exc:
            status = exc.response.status_code
            # 404/400/426: nothing speaks WebSocket there; long-poll right away.
            raise _Reconnect(f"handshake refused with HTTP {status}", fallback=status in (400, 404, 426)) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise _Reconnect(f"cannot connect: {exc!r}") from None
        self.connects += 1
        self.backoff.opened()
        pinger = asyncio.create_task(self._ping(ws))
        replay: list[dict[str, Any]] = []
        synced = False
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), self.ping_interval + self.pong_grace)
                except TimeoutError:
                    # Dead-man timer: not even a pong within a ping round trip.
                    raise _Reconnect("no message or pong within the dead-man timeout") from None
                message = _parse(raw)
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "sync_complete":
                    synced = self._synced = True
                    # Replay is held until sync_complete so that a reset (recovered:
                    # false) reaches the caller before the events that follow it.
                    async for item in self._accept_batch(replay, message):
                        yield item
                    replay = []
                elif kind in ("pong", "error"):
                    if kind == "error":
                        logger.warning("Server reported: %s", message.get("detail"))
                elif "seq" in message:
                    if not synced:
                        replay.append(message)
                        continue
                    async for item in self._accept_live(message):
                        yield item
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code == CLOSE_AUTH:
                raise _Reconnect("access token rejected (4001)", auth=True) from None
            if code == CLOSE_ORIGIN:
                raise StreamError("The server refused this client's Origin (4003).") from None
            raise _Reconnect(f"connection closed (code {code})") from None
        finally:
            pinger.cancel()
            await ws.close()

    async def _ping(self, ws: Any) -> None:
        try:
            while True:
                await asyncio.sleep(self.ping_interval)
                await ws.send(json.dumps({"type": "ping"}))
        except (ConnectionClosed, asyncio.CancelledError):
            return

    async def _accept_batch(self, replay: list[dict[str, Any]], sync: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        if sync.get("recovered") is False:
            yield {"type": "reset", "last_seq": int(sync.get("last_seq", 0))}
            if replay:
                # Events before the first retained one are gone for good.
                self.tracker.last = max(self.tracker.last, int(replay[0]["seq"]) - 1)
        for event in replay:
            async for item in self._accept_live(event):
                yield item
        # Nothing was replayed past last_seq: catch up if the server is ahead of us.
        if int(sync.get("last_seq", 0)) > self.tracker.last and sync.get("recovered") is not False:
            async for item in self._fill_gap():
                yield item
        elif sync.get("recovered") is False:
            self.tracker.last = max(self.tracker.last, int(sync.get("last_seq", 0)))

    async def _accept_live(self, event: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        verdict = self.tracker.classify(int(event["seq"]))
        if verdict == "duplicate":
            return
        if verdict == "gap":
            # A push was lost between server and us: fetch the hole from the log first.
            async for item in self._fill_gap():
                yield item
            if int(event["seq"]) <= self.tracker.last:
                return
        self.tracker.last = int(event["seq"])
        yield event

    async def _fill_gap(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            page = await self._fetch(after=self.tracker.last, wait=0)
            async for item in self._accept_page(page):
                yield item
            if not page.get("has_more"):
                return

    # --- Long-poll transport ---------------------------------------------------------------
    async def _poll_for(self, seconds: float) -> AsyncIterator[dict[str, Any]]:
        """Long-poll ``/api/events/`` for about ``seconds``, then let the caller retry the WebSocket."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.mode = "poll"
            try:
                page = await self._fetch(after=self.tracker.last, wait=self.poll_wait)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                delay = self.backoff.next_delay()
                logger.info("Long-poll failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            self.backoff.attempts = 0
            async for item in self._accept_page(page):
                yield item

    async def _accept_page(self, page: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        events: list[dict[str, Any]] = page.get("events", [])
        if page.get("recovered") is False:
            yield {"type": "reset", "last_seq": int(page.get("last_seq", 0))}
            floor = int(events[0]["seq"]) - 1 if events else int(page.get("last_seq", 0))
            self.tracker.last = max(self.tracker.last, floor)
        for event in events:
            seq = int(event["seq"])
            if seq <= self.tracker.last:
                continue
            # Within one page the server returns a contiguous run; accept it in order.
            self.tracker.last = seq
            yield event

    async def _fetch(self, *, after: int, wait: int) -> dict[str, Any]:
        assert self._http is not None
        response = await self.client._async_request(
            self._http, "GET", "/api/events/", params={"after": after, "wait": wait}, timeout=wait + 15.0
        )
        body: dict[str, Any] = response.json()
        return body


def _parse(raw: str | bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(raw)
    except ValueError:
        logger.warning("Ignoring a malformed frame from the server")
        return None
    return message if isinstance(message, dict) else None
