"""The embedded default end to end: no Redis, SQLite in WAL mode, the in-memory channel
layer and the worker inside the daphne process. Everything over the network, as a user would."""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import product_photo

from .client import frame, open_ws
from .conftest import BASE_DIR, Cluster


def run(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=120)


async def test_the_embedded_default_runs_a_task_from_rest_submit_to_websocket_finish(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "IMAGEGEN_BACKEND", "CHANNEL_LAYER_PREFIX")}
    # The only departure from a bare checkout: the SQLite file lives in a temp dir, not the project folder.
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", MEDIA_ROOT=str(tmp_path / "media"),
               PYTHONPATH=str(BASE_DIR), PYTHONUNBUFFERED="1")
    run(env, "migrate", "--noinput")
    run(env, "shell", "-c", "from django.contrib.auth import get_user_model as m; "
                            "m().objects.create_user('demo', password='demo-pass-123')")
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(env, logs)
    try:
        port = cluster.daphne()
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            tokens = (await http.post("/api/auth/token/", json={"username": "demo", "password": "demo-pass-123"})).json()
            http.headers["Authorization"] = f"Bearer {tokens['access']}"
            ws = await open_ws(port, tokens["access"])
            assert await frame(ws) == {"type": "sync_complete", "last_seq": 0, "recovered": True}
            poll = asyncio.ensure_future(http.get("/api/events/?after=0&wait=25"))
            # Server-Sent Events with an API key, on the in-memory layer too.
            key = (await http.post("/api/keys/", json={"name": "embedded"})).json()["key"]
            sse_seqs: list[int] = []

            async def follow_sse() -> None:
                async with http.stream("GET", "/api/events/stream/?after=0",
                                       headers={"Authorization": f"Api-Key {key}"}) as stream:
                    assert stream.status_code == 200
                    async for line in stream.aiter_lines():
                        if line.startswith("data: ") and '"seq"' in line:
                            event = json.loads(line[6:])
                            sse_seqs.append(event["seq"])
                            if event["type"] in ("task_complete", "task_failed"):
                                return

            sse = asyncio.ensure_future(follow_sse())
            submitted = time.monotonic()
            created = await http.post("/api/tasks/", files={"image": ("shoe.jpg", product_photo())})
            assert created.status_code == 201, created.text
            task = created.json()

            events, lags = [], []
            while not events or events[-1]["type"] not in ("task_complete", "task_failed"):
                event = await frame(ws, 60)
                lags.append(time.time() - datetime.fromisoformat(event["timestamp"]).timestamp())
                events.append(event)
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert {e["task_id"] for e in events} == {task["id"]}
            assert events[0]["type"] == "task_created" and events[1]["data"]["status"] == "processing"
            assert events[-1]["type"] == "task_complete", events[-1]
            # Events written by the worker thread reach the socket at once, not at
            # the server's next unrelated wake-up (the in-memory layer trap).
            print(f"embedded push lag: median {statistics.median(lags) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms")
            assert statistics.median(lags) < 0.1 and max(lags) < 0.75, lags

            await asyncio.wait_for(sse, 30)
            assert sse_seqs == [e["seq"] for e in events]
            polled = (await poll).json()
            assert polled["events"][0]["seq"] == 1 and polled["events"][0]["task_id"] == task["id"]
            result = await http.get(f"/api/tasks/{task['id']}/result/")
            assert result.status_code == 200 and result.headers["content-type"].startswith("image/")
            print(f"submit to complete over the socket: {time.monotonic() - submitted:.2f}s")
            await ws.close()
    finally:
        cluster.stop()
    assert "Embedded worker starting inside the web process" in cluster.log("daphne")
