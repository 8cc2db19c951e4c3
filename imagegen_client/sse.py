"""The Server-Sent Events transport of the event stream: ``GET /api/events/stream/``.

For networks where a WebSocket cannot pass (a proxy that strips ``Upgrade``)
but a long HTTP response can. The cursor goes as ``Last-Event-ID`` (and
``after``), the server replays what was missed, sends ``sync_complete``, then
live events, with a keep-alive comment every 15 s: a read that sees nothing for
``idle_timeout`` seconds is a dead connection. Authentication is the HTTP
client's own (bearer tokens renewed by :class:`~imagegen_client.auth.TokenAuth`,
or an API key). Every way the stream ends becomes a
:class:`~imagegen_client.errors.Disconnected`, as with the WebSocket.
"""
from __future__ import annotations

import logging
from typing import AsyncGenerator

import httpx
from httpx_sse import SSEError, aconnect_sse

from .errors import Disconnected, ImagegenError
from .sequencing import Item

logger = logging.getLogger(__name__)

STREAM_PATH = "/api/events/stream/"


async def stream_messages(http: httpx.AsyncClient, *, after: int,
                          idle_timeout: float) -> AsyncGenerator[Item, None]:
    """Every message (events, ``sync_complete``) the server sends after ``after``."""
    timeout = httpx.Timeout(10.0, read=idle_timeout)
    try:
        async with aconnect_sse(http, "GET", STREAM_PATH, params={"after": after},
                                headers={"Last-Event-ID": str(after)}, timeout=timeout) as source:
            response = source.response
            if response.status_code != 200:
                await response.aread()
                error = ImagegenError.from_response(response)
                if response.status_code in (404, 405, 406):
                    raise Disconnected(f"no event stream here (HTTP {response.status_code})", fallback=True)
                if error.temporary:
                    raise Disconnected(f"event stream answered {response.status_code}",
                                       retry_after=error.retry_after)
                raise error
            async for event in source.aiter_sse():
                if not event.data:
                    continue
                message = event.json()
                if event.event == "close":
                    reason = message.get("reason") if isinstance(message, dict) else None
                    # At the token's expiry come straight back with a renewed one.
                    raise Disconnected(f"server ended the stream ({reason})", auth=reason == "token_expired")
                if isinstance(message, dict):
                    yield message
    except httpx.TransportError as exc:
        raise Disconnected(f"event stream lost: {exc!r}") from None
    except SSEError as exc:
        raise Disconnected(f"not an event stream: {exc}", fallback=True) from None
    except ImagegenError as exc:
        if exc.temporary:  # renewing the token met a busy server
            raise Disconnected(f"token renewal answered {exc.status_code}", retry_after=exc.retry_after) from None
        raise
    raise Disconnected("server closed the event stream")
