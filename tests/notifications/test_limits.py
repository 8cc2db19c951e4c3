"""Shared limits and counts (the cache), and what happens when Redis is gone."""
from __future__ import annotations

import socket
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile

from imagegen_site.cache import process_cache
from notifications import presence as presence_module
from notifications import ratelimit
from notifications.events import publisher
from notifications.models import Event
from notifications.presence import Presence

from .support import close_code, eventually, open_socket, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def dead_redis_url() -> str:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_a_fixed_window_admits_up_to_the_limit() -> None:
    assert [ratelimit.hit("t", 2) for _ in range(3)] == [True, True, False]
    assert ratelimit.hit("other", 2)


def test_the_limiter_fails_open_when_the_cache_raises(monkeypatch: Any) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("down")

    monkeypatch.setattr(process_cache(), "incr", broken)
    assert all(ratelimit.hit("t", 1) for _ in range(3))


async def test_open_connections_and_the_cap_span_server_processes(monkeypatch: Any) -> None:
    monkeypatch.setattr(presence_module, "REGISTRY_CACHE_SECONDS", 0.0)
    one, two = Presence(), Presence()  # two server processes sharing the cache
    assert await one.try_open(7, cap=3)
    assert await two.try_open(7, cap=3)
    assert await two.try_open(8, cap=3)
    assert await eventually(lambda: _equals(sync_to_async(one.open_connections)(), 3))
    assert await eventually(lambda: _equals(sync_to_async(two.open_connections)(), 3))
    assert await two.try_open(7, cap=3)  # 1 in one + 2 in two
    # Counts reach other processes when their flusher has written them (a soft cap).
    assert await eventually(lambda: _equals(sync_to_async(one.open_connections)(), 4))
    assert not await one.try_open(7, cap=3)  # over the cap across both
    two.close(7)
    two.close(7)
    assert await eventually(lambda: one.try_open(7, cap=3))
    assert await eventually(lambda: _equals(sync_to_async(two.open_connections)(), 3))


async def _equals(value: Any, expected: int) -> bool:
    return (await value) == expected


def test_submit_and_polling_work_while_the_cache_is_down(settings: Any, auth_client: Any, user: Any,
                                                         photo_bytes: bytes) -> None:
    settings.CACHES = {"default": {"BACKEND": "imagegen_site.cache.FailOpenRedisCache",
                                   "LOCATION": dead_redis_url(), "OPTIONS": {"socket_connect_timeout": 1}}}
    image = SimpleUploadedFile("p.jpg", photo_bytes, content_type="image/jpeg")
    response = auth_client.post("/api/tasks/", {"image": image}, format="multipart")
    assert response.status_code == 201, response.content  # DRF throttles read the cache: they fail open
    assert auth_client.get("/api/tasks/").status_code == 200
    body = auth_client.get("/api/events/?after=0").json()
    assert [e["type"] for e in body["events"]] == ["task_created"]


def test_submit_works_while_the_channel_layer_is_down(settings: Any, auth_client: Any, user: Any,
                                                      photo_bytes: bytes) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                                           "CONFIG": {"hosts": [{"address": dead_redis_url()}]}}}
    failed = publisher.counts["failed"]
    image = SimpleUploadedFile("p.jpg", photo_bytes, content_type="image/jpeg")
    response = auth_client.post("/api/tasks/", {"image": image}, format="multipart")
    assert response.status_code == 201
    assert publisher.flush_sync()
    assert publisher.counts["failed"] == failed + 1
    assert Event.objects.filter(user=user).count() == 1


async def test_sockets_are_refused_with_4013_while_the_channel_layer_is_down(user: Any, settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                                           "CONFIG": {"hosts": [{"address": dead_redis_url()}]}}}
    assert await close_code(await open_socket(token_for(user))) == 4013


async def test_a_poll_still_answers_while_the_channel_layer_is_down(user: Any, settings: Any,
                                                                     async_client: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                                           "CONFIG": {"hosts": [{"address": dead_redis_url()}]}}}
    headers = {"Authorization": f"Bearer {token_for(user)}"}
    response = await async_client.get("/api/events/?after=0&wait=1", headers=headers)
    assert response.status_code == 200
    assert response.json() == {"events": [], "last_seq": 0, "has_more": False, "recovered": True}
