"""/healthz: a database and a channel-layer round trip; a stopped Redis is a 503 naming the layer."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from imagegen_site import health
from tests.conftest import free_port, wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def private_redis() -> Iterator[tuple[subprocess.Popen, int]]:
    """A redis-server of this test's own, so stopping it disturbs nobody else."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
        except redis.ConnectionError:
            assert proc.poll() is None, "redis-server exited"
            return False

    try:
        wait_until(answers, timeout=10)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def use_layer(settings: Any, port: int) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}/0"]},
        }
    }


def test_it_reports_ok_after_both_round_trips(client: Any, settings: Any, private_redis: Any) -> None:
    use_layer(settings, private_redis[1])

    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {"database": "ok", "channel_layer": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


def test_it_reports_a_stopped_redis_as_503_naming_the_channel_layer(
    client: Any, settings: Any, private_redis: Any
) -> None:
    proc, port = private_redis
    settings.IMAGEGEN_HEALTH_TIMEOUT = 1.0
    use_layer(settings, port)
    assert client.get("/healthz").status_code == 200

    proc.terminate()
    proc.wait(10)
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["failed"] == ["channel_layer"]
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["channel_layer"]["status"] == "error"
    assert body["checks"]["channel_layer"]["ms"] < 5000


def test_it_works_with_the_in_memory_layer_of_the_embedded_default(client: Any, settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert client.get("/healthz").status_code == 200


def test_it_reports_a_failing_database_as_503(client: Any, settings: Any, monkeypatch: Any) -> None:
    from django.db import OperationalError

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

    def unreachable() -> None:
        raise OperationalError("connection refused")

    monkeypatch.setitem(health.CHECKS, "database", unreachable)
    body = client.get("/healthz").json()
    assert (body["failed"], body["checks"]["database"]["error"]) == (["database"], "OperationalError")


def test_it_answers_only_get(client: Any) -> None:
    assert client.post("/healthz").status_code == 405
