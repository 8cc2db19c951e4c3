"""Deadlines and Prefer: wait with real processes: daphne (and runworker where a worker is meant to run)."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from tests.conftest import product_photo, wait_until

from .client import frame, open_ws, until_sync
from .conftest import Cluster

SLOW = "tests.generation.backends.SlowBackend"


def worker_is_up() -> bool:
    from django.db import connection

    from generation.models import WorkerProcess

    try:
        return WorkerProcess.objects.filter(stopped_at__isnull=True).exists()
    finally:
        connection.close()


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


async def submit(http: httpx.AsyncClient, **fields: str) -> httpx.Response:
    headers = {"Prefer": fields.pop("prefer")} if "prefer" in fields else {}
    return await http.post("/api/tasks/", files={"image": ("shoe.jpg", product_photo())}, data=fields,
                           headers=headers)


def client_for(port: int, user: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=90,
                             headers={"Authorization": f"Bearer {AccessToken.for_user(user)}"})


async def test_a_task_expires_at_its_deadline_with_no_worker_running(cluster: Cluster, make_user: Any) -> None:
    user = await sync_to_async(make_user)()
    port = cluster.daphne()  # IMAGEGEN_EMBEDDED_WORKER=0 and no runworker: nobody will ever start it
    async with client_for(port, user) as http:
        ws = await open_ws(port, str(AccessToken.for_user(user)))
        await until_sync(ws)
        submitted = time.monotonic()
        created = await submit(http, expires_in="1", client_ref="SKU-EXP")
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        assert (await frame(ws))["type"] == "task_created"
        poll = asyncio.ensure_future(http.get("/api/events/?after=1&wait=25"))  # the long-poll sees it too
        canceled = await frame(ws, 10)
        took = time.monotonic() - submitted
        print(f"expired after {took:.2f}s (deadline 1 s)")
        assert canceled["type"] == "task_canceled" and canceled["task_id"] == task_id
        assert canceled["data"]["error_code"] == "expired" and canceled["data"]["client_ref"] == "SKU-EXP"
        assert canceled["data"]["started_at"] is None and canceled["data"]["attempts"] == 0
        assert 0.9 <= took < 2.5, took
        polled = (await poll).json()["events"]
        assert [(e["seq"], e["type"]) for e in polled] == [(2, "task_canceled")]
        await ws.close()


async def test_a_worker_with_a_long_queue_never_starts_a_task_past_its_deadline(
    cluster: Cluster, make_user: Any
) -> None:
    user = await sync_to_async(make_user)()
    port = cluster.daphne()
    cluster.worker(IMAGEGEN_BACKEND=SLOW, TEST_BACKEND_SECONDS="0.7")  # concurrency 1: one task at a time
    async with client_for(port, user) as http:
        queue = [(await submit(http)).json()["id"] for _ in range(4)]
        late = (await submit(http, expires_in="1")).json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tasks = {t["id"]: t for t in (await http.get("/api/tasks/")).json()["results"]}
            if all(tasks[i]["status"] == "completed" for i in queue):
                break
            await asyncio.sleep(0.2)
        assert all(tasks[i]["status"] == "completed" for i in queue), tasks
        expired = tasks[late]
        assert (expired["status"], expired["error_code"], expired["attempts"], expired["started_at"]) == (
            "canceled", "expired", 0, None)
        # it ended at its deadline, long before the queue ahead of it was done
        assert expired["finished_at"] < tasks[queue[-1]]["finished_at"]


async def test_prefer_wait_answers_with_the_finished_task_when_a_worker_runs_it(
    cluster: Cluster, make_user: Any
) -> None:
    user = await sync_to_async(make_user)()
    port = cluster.daphne()
    cluster.worker()
    await sync_to_async(wait_until)(worker_is_up, timeout=60)  # measure the wait, not the worker's start
    async with client_for(port, user) as http:
        started = time.monotonic()
        response = await submit(http, prefer="wait=30", client_ref="SKU-W")
        took = time.monotonic() - started
        assert response.status_code == 201, response.text
        assert response.headers["Preference-Applied"] == "wait=30"
        body = response.json()
        assert body["status"] == "completed" and body["client_ref"] == "SKU-W", body
        assert body["result_image_url"] == f"/api/tasks/{body['id']}/result/"
        result = await http.get(body["result_image_url"])
        assert result.status_code == 200 and result.headers["content-type"].startswith("image/")
        print(f"Prefer: wait answered completed after {took:.2f}s")
        assert took < 15, took


async def test_prefer_wait_without_a_worker_answers_pending_after_n_seconds_and_waits_do_not_queue(
    cluster: Cluster, make_user: Any
) -> None:
    user = await sync_to_async(make_user)()
    # Two threads in daphne's pool, where the submits run: a wait that held a thread would
    # make the twenty queue behind each other (ten rounds of 3 s).
    port = cluster.daphne(ASGI_THREADS="2")
    pid = next(proc.pid for name, proc in cluster.procs if name == "daphne")
    async with client_for(port, user) as http:
        started = time.monotonic()
        one = await submit(http, prefer="wait=2")
        took = time.monotonic() - started
        assert one.status_code == 201 and one.json()["status"] == "pending"
        assert one.headers["Preference-Applied"] == "wait=2"
        assert 1.9 <= took < 3.5, took

        before = threads_of(pid)
        started = time.monotonic()
        waits = [asyncio.ensure_future(submit(http, prefer="wait=3")) for _ in range(20)]
        peak = before
        while not all(w.done() for w in waits):
            peak = max(peak, threads_of(pid))
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
        answers = [w.result() for w in waits]
        assert [r.status_code for r in answers] == [201] * 20
        assert {r.json()["status"] for r in answers} == {"pending"}
        # Django's ASGI handler gives each request its own (idle) thread for sync signal
        # receivers: the thread count grows with requests, waiting or not (docs/api.md).
        print(f"20 concurrent waits of 3 s answered in {took:.2f}s; daphne threads {before} -> peak {peak}")
        assert took < 7, took


def test_the_embedded_default_waits_and_expires_too(tmp_path: Path) -> None:
    """No Redis, SQLite, the worker in the web process (one runner): Prefer: wait answers with
    the finished task, and a task stuck behind a long one expires on time over the socket."""
    import subprocess
    import sys

    from .conftest import BASE_DIR

    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "IMAGEGEN_BACKEND", "CHANNEL_LAYER_PREFIX")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", MEDIA_ROOT=str(tmp_path / "media"),
               PYTHONPATH=str(BASE_DIR), PYTHONUNBUFFERED="1", IMAGEGEN_BACKEND=SLOW, TEST_BACKEND_SECONDS="3",
               IMAGEGEN_EMBEDDED_CONCURRENCY="1")
    for args in (["migrate", "--noinput"],
                 ["shell", "-c", "from django.contrib.auth import get_user_model as m; "
                                 "m().objects.create_user('demo', password='demo-pass-123')"]):
        subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=120)
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(env, logs)
    try:
        port = cluster.daphne()
        asyncio.run(_embedded(port))
    except BaseException:
        print(cluster.tail("daphne"))
        raise
    finally:
        cluster.stop()


async def _embedded(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=90) as http:
        tokens = (await http.post("/api/auth/token/", json={"username": "demo", "password": "demo-pass-123"})).json()
        http.headers["Authorization"] = f"Bearer {tokens['access']}"
        ws = await open_ws(port, tokens["access"])
        await until_sync(ws)
        waited = asyncio.ensure_future(submit(http, prefer="wait=30"))  # runs for 3 s
        while not (await http.get("/api/tasks/?status=processing")).json()["results"]:
            await asyncio.sleep(0.05)
        submitted = time.monotonic()
        late = (await submit(http, expires_in="1")).json()
        while True:
            event = await frame(ws, 10)
            if event["task_id"] == late["id"] and event["type"] != "task_created":
                break
        took = time.monotonic() - submitted
        assert event["type"] == "task_canceled" and event["data"]["error_code"] == "expired", event
        assert 0.9 <= took < 2.5, took
        first = await waited
        assert first.status_code == 201 and first.json()["status"] == "completed", first.text
        assert first.headers["Preference-Applied"] == "wait=30"
        await ws.close()
