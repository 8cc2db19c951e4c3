"""A Redis outage: submissions and processing go on, pushes fail (logged), nothing is lost."""
from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any, Iterator

import httpx
import pytest
from asgiref.sync import sync_to_async

from generation.models import GenerationTask
from notifications.models import EventCounter
from tests.conftest import product_photo, wait_until
from tests.notifications.support import token_for

from .client import events_through, frame, open_ws, until_sync
from .conftest import accepts, free_port

pytestmark = pytest.mark.django_db(transaction=True)


class RedisServer:
    """A redis-server of this test's own, so it can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: accepts(self.port), timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        wait_until(lambda: not accepts(self.port), timeout=10)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


async def submit(client: httpx.AsyncClient, index: int) -> dict:
    response = await client.post("/api/tasks/", files={"image": (f"p{index}.jpg", product_photo(480 + index, 360))})
    assert response.status_code == 201, response.text
    return response.json()


def all_completed(ids: list[int]) -> bool:
    return GenerationTask.objects.filter(pk__in=ids, status="completed").count() == len(ids)


async def reconnect(port: int, token: str, after: int) -> Any:
    """Like a client would: retry until the server takes us (4013 while the layer is down)."""
    for _ in range(100):
        ws = await open_ws(port, token, after=after)
        try:
            return ws, *(await until_sync(ws))
        except Exception:
            await ws.close()
            await asyncio.sleep(0.1)
    raise AssertionError("could not reconnect")


async def test_a_redis_outage_stops_no_submission_and_loses_no_event(cluster: Any, make_user: Any,
                                                                      redis_server: RedisServer) -> None:
    # Every ping reads the log here (in production at most once a second): the one ping
    # below may come sooner than a second after the connect's own read.
    web = cluster.daphne(REDIS_URL=redis_server.url, IMAGEGEN_WS_PING_CHECK_SECONDS="0")
    cluster.worker(REDIS_URL=redis_server.url)
    user = await sync_to_async(make_user)()
    token = token_for(user)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{web}", headers={"Authorization": f"Bearer {token}"},
                             timeout=30)
    ws = await open_ws(web, token, after=0)
    assert (await until_sync(ws))[1]["last_seq"] == 0
    first = await submit(http, 0)
    await sync_to_async(wait_until)(lambda: GenerationTask.objects.get(pk=first["id"]).status == "completed")
    before = await sync_to_async(EventCounter.last_seq_for)(user.pk)
    assert [e["seq"] for e in await events_through(ws, before)] == list(range(1, before + 1))

    redis_server.stop()
    during = [await submit(http, i) for i in range(1, 4)]  # still 201: throttles fail open, pushes fail
    ids = [first["id"], *(t["id"] for t in during)]
    await sync_to_async(wait_until)(lambda: all_completed(ids), timeout=60)
    outage_end = await sync_to_async(EventCounter.last_seq_for)(user.pk)
    assert outage_end > before + 6
    assert "failed" in cluster.log("worker") and "clients recover it from the event log" in cluster.log("worker")
    # The open socket cannot get pushes, but a ping reads the log.
    await ws.send(json.dumps({"type": "ping"}))
    caught_up = await events_through(ws, outage_end)
    assert [e["seq"] for e in caught_up] == list(range(before + 1, outage_end + 1))
    assert await frame(ws) == {"type": "pong"}

    redis_server.start()
    resumed, replayed, sync = await reconnect(web, token, after=before)
    assert [e["seq"] for e in replayed] == list(range(before + 1, outage_end + 1))
    assert sync == {"type": "sync_complete", "last_seq": outage_end, "recovered": True}
    last = await submit(http, 9)
    await sync_to_async(wait_until)(lambda: GenerationTask.objects.get(pk=last["id"]).status == "completed")
    final = await sync_to_async(EventCounter.last_seq_for)(user.pk)
    assert [e["seq"] for e in await events_through(resumed, final)] == list(range(outage_end + 1, final + 1))
    # The socket that lived through the outage: whatever its pushes missed, a ping brings.
    seen: list[dict] = []
    while not seen or seen[-1]["seq"] < final:
        await ws.send(json.dumps({"type": "ping"}))
        while (message := await frame(ws))["type"] != "pong":
            seen.append(message)
    assert [e["seq"] for e in seen] == list(range(outage_end + 1, final + 1))
    await http.aclose()
    await ws.close()
    await resumed.close()
