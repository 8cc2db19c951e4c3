"""The embedded default (SQLite, no Redis, the worker inside daphne) delivers webhooks too."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from standardwebhooks import Webhook

from tests.conftest import product_photo, wait_until
from tests.e2e.conftest import BASE_DIR, QUICK, Cluster

from .receiver import Receiver


def test_the_embedded_worker_delivers_a_tasks_events_signed(tmp_path: Path, receiver: Receiver) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "IMAGEGEN_BACKEND", "CHANNEL_LAYER_PREFIX")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", MEDIA_ROOT=str(tmp_path / "media"),
               PYTHONPATH=str(BASE_DIR), PYTHONUNBUFFERED="1", IMAGEGEN_BACKEND=QUICK,
               IMAGEGEN_FETCH_ALLOW_HTTP="1", IMAGEGEN_FETCH_ALLOW_PRIVATE="1")
    for args in (["migrate", "--noinput"], ["ensure_user", "demo", "--password", "demo-pass-123"]):
        subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=120)
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(env, logs)
    try:
        port = cluster.daphne()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            token = http.post("/api/auth/token/", json={"username": "demo", "password": "demo-pass-123"}).json()
            http.headers["Authorization"] = f"Bearer {token['access']}"
            hook = http.post("/api/webhooks/", json={"url": receiver.url(), "events": ["*"]})
            assert hook.status_code == 201, hook.text
            task = http.post("/api/tasks/", files={"image": ("shoe.jpg", product_photo())}).json()
            wait_until(lambda: any(r.json["type"] == "task_complete" for r in receiver.received), timeout=60)
            received = sorted(receiver.received, key=lambda r: r.json["seq"])
            assert received[0].json["type"] == "task_created" and received[0].json["task_id"] == task["id"]
            for request in received:
                Webhook(hook.json()["secret"]).verify(request.body, request.headers)
            log = http.get(f"/api/webhooks/{hook.json()['id']}/deliveries/").json()["results"]
            assert {d["status"] for d in log} == {"delivered"}
    finally:
        cluster.stop()
