"""A WebSocket client for the end-to-end tests (the ``websockets`` library, like a script would use)."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


async def open_ws(port: int, token: str, after: int | None = None, **kwargs: Any) -> ClientConnection:
    query = f"token={token}" + (f"&after={after}" if after is not None else "")
    return await connect(f"ws://127.0.0.1:{port}/ws/notifications?{query}", open_timeout=30, **kwargs)


async def frame(ws: ClientConnection, timeout: float = 20) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until_sync(ws: ClientConnection, timeout: float = 20) -> tuple[list[dict], dict]:
    events: list[dict] = []
    while True:
        message = await frame(ws, timeout)
        if message["type"] == "sync_complete":
            return events, message
        events.append(message)


async def events_through(ws: ClientConnection, last: int, timeout: float = 60) -> list[dict]:
    """Events until one with seq >= ``last`` (other frames, like pongs, are skipped)."""
    received: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not received or received[-1]["seq"] < last:
        message = await frame(ws, max(deadline - loop.time(), 0.01))
        if "seq" in message:
            received.append(message)
    return received
