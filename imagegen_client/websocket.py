"""The WebSocket transport of the event stream: ``/ws/notifications``.

It connects, keeps the connection proven alive with app-level pings, and
yields each message the server sends; every way the connection can end
becomes a :class:`~imagegen_client.errors.Disconnected` that says what to do
next. What to hand out is the sequencer's business, not this module's.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import AsyncGenerator, Awaitable, Callable

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .auth import refresh_due, token_claims
from .backoff import retry_after
from .errors import Disconnected, StreamError
from .sequencing import Item

logger = logging.getLogger(__name__)

# Close codes the server uses.
CLOSE_AUTH = 4001
CLOSE_ORIGIN = 4003
CLOSE_RATE = 4029

#: Replays can be long; the server's own frames stay far below this.
MAX_FRAME_BYTES = 4 * 2**20


def events_url(base_url: httpx.URL, *, token: str, after: int, param: str = "token") -> str:
    """``ws(s)://<host>/<prefix>/ws/notifications?token=...&after=...`` for an HTTP base URL
    (``param="api_key"`` for an API key)."""
    base = base_url.copy_with(scheme="wss" if base_url.scheme == "https" else "ws", query=None)
    base = base.copy_with(raw_path=base.raw_path.rstrip(b"/") + b"/")
    return str(base.join("ws/notifications").copy_merge_params({param: token, "after": after}))


async def open_connection(url: str) -> ClientConnection:
    try:
        # Protocol-level pings off: the app-level ping proves the consumer (not
        # just the TCP peer) is alive.
        return await connect(url, ping_interval=None, open_timeout=10, max_size=MAX_FRAME_BYTES)
    except InvalidStatus as exc:
        status = exc.response.status_code
        wait = retry_after(exc.response.headers.get("Retry-After"))
        # 404/400/426: nothing speaks WebSocket there; long-poll right away.
        raise Disconnected(f"handshake refused with HTTP {status}", fallback=status in (400, 404, 426),
                           retry_after=wait) from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise Disconnected(f"cannot connect: {exc!r}") from None


async def messages(ws: ClientConnection, *, ping_interval: float, pong_grace: float) -> AsyncGenerator[Item, None]:
    """Every message object the server sends, until the connection ends (then :class:`Disconnected`)."""
    pinger = asyncio.create_task(_ping(ws, ping_interval))
    try:
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), ping_interval + pong_grace)
            except TimeoutError:
                # Dead-man timer: not even a pong within a ping round trip. A
                # half-open TCP connection never reports an error on its own.
                raise Disconnected("no message or pong within the dead-man timeout") from None
            message = _parse(raw)
            if message is None or message.get("type") == "pong":
                continue
            if message.get("type") == "refreshed":
                logger.debug("Access token refreshed in band; the connection now lasts until %s",
                             message.get("expires_at"))
                continue
            if message.get("type") == "error":
                logger.warning("Server reported: %s", message.get("detail"))
                continue
            yield message
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        if code == CLOSE_AUTH:
            raise Disconnected("access token rejected (4001)", auth=True) from None
        if code == CLOSE_ORIGIN:
            raise StreamError("The server refused this client's Origin (4003).") from None
        raise Disconnected(f"connection closed (code {code})") from None
    finally:
        pinger.cancel()


async def _ping(ws: ClientConnection, interval: float) -> None:
    try:
        while True:
            await asyncio.sleep(interval)
            await ws.send(json.dumps({"type": "ping"}))
    except (ConnectionClosed, asyncio.CancelledError):
        return


def _parse(raw: str | bytes) -> Item | None:
    try:
        message = json.loads(raw)
    except ValueError:
        logger.warning("Ignoring a malformed frame from the server")
        return None
    return message if isinstance(message, dict) else None


async def refresh_in_band(ws: ClientConnection, token: str, renewed: Callable[[], Awaitable[str]],
                          clock: Callable[[], float] = time.time) -> None:
    """Keep the connection's token fresh without reconnecting: shortly before ``token``
    expires (the margin of :func:`~imagegen_client.auth.refresh_due`), get a renewed one
    from ``renewed`` and send ``{"type": "refresh"}``. A failed renewal is logged and
    left to the server, which then closes with 4001 (the stream reconnects)."""
    while True:
        expires = token_claims(token).get("exp")
        if not isinstance(expires, (int, float)):
            return
        while not refresh_due(token, clock()):
            await asyncio.sleep(min(max(float(expires) - clock(), 0.0), 1.0))
        try:
            fresh = await renewed()
        except Exception as exc:  # noqa: BLE001 - the 4001 at expiry is the recovery path
            logger.warning("Cannot renew the access token for an in-band refresh (%r)", exc)
            return
        if fresh == token:
            return  # the source cannot give a newer one; the server's 4001 will say so
        try:
            await ws.send(json.dumps({"type": "refresh", "token": fresh}))
        except ConnectionClosed:
            return
        token = fresh
