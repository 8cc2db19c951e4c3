"""Batches in the embedded default (SQLite, in-memory layer, worker inside daphne), over the network:
submit, follow the batch events on the WebSocket, download the streamed archive."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import httpx

from tests.conftest import product_photo

from .client import frame, open_ws
from .conftest import BASE_DIR, Cluster
from .test_embedded import run


async def test_an_embedded_batch_finishes_over_the_websocket_and_its_archive_streams(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CHANNEL_LAYER_PREFIX")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", MEDIA_ROOT=str(tmp_path / "media"),
               PYTHONPATH=str(BASE_DIR), PYTHONUNBUFFERED="1",
               IMAGEGEN_BACKEND="tests.generation.backends.QuickBackend")
    run(env, "migrate", "--noinput")
    run(env, "shell", "-c", "from django.contrib.auth import get_user_model as m; "
                            "m().objects.create_user('demo', password='demo-pass-123')")
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(env, logs)
    try:
        port = cluster.daphne()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            tokens = (await http.post("/api/auth/token/", json={"username": "demo", "password": "demo-pass-123"})).json()
            http.headers["Authorization"] = f"Bearer {tokens['access']}"
            ws = await open_ws(port, tokens["access"])
            assert (await frame(ws))["type"] == "sync_complete"
            files = [("image", (f"shoe-{i}.jpg", product_photo(320 + 16 * i, 240))) for i in range(3)]
            created = await http.post("/api/batches/", files=files, data={"preset": "etsy"})
            assert created.status_code == 201, created.text
            batch = created.json()

            events = []
            while not events or events[-1]["type"] != "batch_complete":
                events.append(await frame(ws, 60))
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert events[0]["type"] == "batch_update" and events[0]["data"]["id"] == batch["id"]
            assert events[-1]["data"]["status"] == "completed" and events[-1]["data"]["counts"]["completed"] == 3

            archive = await http.get(f"/api/batches/{batch['id']}/archive/")
            assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
            assert int(archive.headers["content-length"]) == len(archive.content)
            names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
            assert names == ["shoe-0.jpg", "shoe-1.jpg", "shoe-2.jpg", "manifest.csv"]
    finally:
        cluster.stop()
    # Streamed chunk by chunk: Django warns when it has to collect a sync iterator into a list first.
    assert "must consume" not in cluster.log("daphne")
