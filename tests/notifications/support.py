"""Helpers shared by the notifications and end-to-end tests."""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from notifications.routing import websocket_urlpatterns

# Redis pub/sub channels are global across Redis databases: another test run on
# the same Redis (same user ids, same group names) would push into our groups.
LAYER_PREFIX = f"imgtest{os.getpid()}"


def isolate_channel_layer() -> None:
    """Give this test process (and the servers it starts) a private channel prefix."""
    from django.conf import settings

    os.environ["CHANNEL_LAYER_PREFIX"] = LAYER_PREFIX
    config = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    if "hosts" in config:
        config["prefix"] = LAYER_PREFIX


def token_for(user: Any, lifetime: Any = None) -> str:
    token = AccessToken.for_user(user)
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    return str(token)


def ws_application() -> Any:
    """The WebSocket half of imagegen_site.asgi (without its server hooks; the consumer checks
    the Origin and the token itself)."""
    return URLRouter(websocket_urlpatterns)


async def open_socket(token: str | None = None, *, after: int | str | None = None, origin: str | None = None,
                      client: tuple[str, int] = ("127.0.0.1", 50000)) -> WebsocketCommunicator:
    """Connect a communicator; the handshake is always accepted (refusals are close codes)."""
    query = {k: v for k, v in {"token": token, "after": after}.items() if v is not None}
    headers = [(b"origin", origin.encode())] if origin else []
    communicator = WebsocketCommunicator(ws_application(), f"/ws/notifications?{urlencode(query)}", headers=headers)
    communicator.scope["client"] = list(client)
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    return communicator


async def close_code(communicator: WebsocketCommunicator, timeout: float = 10) -> int:
    """The code of the close the server sends next (fails on any other frame).

    The close is then completed as daphne completes it, with a ``websocket.disconnect``, so the
    consumer's disconnect runs (the socket leaves the open-connection counts) as in production."""
    message = await communicator.receive_output(timeout)
    assert message["type"] == "websocket.close", message
    code = message.get("code", 1000)
    await communicator.disconnect(code, timeout)
    return code


async def read_until_sync(communicator: WebsocketCommunicator, timeout: float = 10) -> tuple[list[dict], dict]:
    """Events received before the next sync_complete, and the sync_complete."""
    events: list[dict] = []
    while True:
        frame = await communicator.receive_json_from(timeout)
        if frame["type"] == "sync_complete":
            return events, frame
        assert "seq" in frame, frame
        events.append(frame)


async def read_events(communicator: WebsocketCommunicator, count: int, timeout: float = 10) -> list[dict]:
    frames = [await communicator.receive_json_from(timeout) for _ in range(count)]
    assert all("seq" in f for f in frames), frames
    return frames


def terminate_other_sessions() -> None:
    """End other connections to the test database (pool threads, stopped servers)
    so that it can be dropped: PostgreSQL refuses while sessions remain."""
    from django.db import DatabaseError, connection

    if connection.vendor != "postgresql":
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    except DatabaseError:
        pass  # no test of this session touched the database: nothing to end


def seed_events(user: Any, count: int, *, start: int = 1, age: Any = None) -> None:
    """Write ``count`` log entries for ``user`` directly (a long history, quickly)."""
    from django.utils import timezone

    from notifications.models import Event, EventCounter

    created = timezone.now() - age if age is not None else timezone.now()
    data = {"status": "pending", "progress": 0, "result_image_url": None, "elapsed_time": None,
            "estimated_remaining_seconds": None, "error_code": None, "error_message": None,
            "updated_at": created.isoformat()}
    Event.objects.bulk_create(
        Event(user=user, seq=seq, task_id=10_000 + seq, type="task_update", data=data, created_at=created)
        for seq in range(start, start + count)
    )
    EventCounter.objects.update_or_create(user=user, defaults={"last_seq": start + count - 1})


async def eventually(predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Async ``wait_until``: await a condition with a deadline (predicate may be async)."""
    import asyncio
    import inspect
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
