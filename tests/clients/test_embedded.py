"""The embedded default (SQLite, in-process layer, worker inside daphne) serves the page and the clients."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from imagegen_client import Client
from tests.conftest import wait_until

from .conftest import BASE_DIR, accepts, free_port, photo_variant


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "IMAGEGEN_EMBEDDED_WORKER")}
    # The default database is db.sqlite3 in the project folder; a file of our own keeps that one untouched.
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", MEDIA_ROOT=str(tmp_path / "media"),
               IMAGEGEN_BACKEND="local", PYTHONPATH=str(BASE_DIR), DEBUG="0", SECRET_KEY="embedded-test-key")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
    subprocess.run([*manage, "ensure_user", "demo", "--password", "demo-pass-123"], cwd=BASE_DIR, env=env,
                   check=True, capture_output=True)
    port = free_port()
    with open(tmp_path / "daphne.log", "wb") as log:
        web = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                "imagegen_site.asgi:application"], cwd=BASE_DIR, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: accepts(port) or web.poll() is not None, timeout=30)
        assert web.poll() is None, (tmp_path / "daphne.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        web.terminate()
        web.wait(20)


def test_the_page_and_its_static_files_are_served_by_plain_daphne_with_debug_off(embedded: str) -> None:
    # httpx's 5 s default is too short for a freshly started daphne's first request on a loaded machine.
    page = httpx.get(embedded + "/", timeout=60)
    assert page.status_code == 200 and 'type="module"' in page.text
    for asset in ("app/app.js", "app/feed.js", "app/app.css"):
        response = httpx.get(f"{embedded}/static/{asset}")
        assert response.status_code == 200, asset
    assert httpx.get(embedded + "/static/app/missing.js").status_code == 404


def test_a_task_submitted_over_rest_finishes_over_the_websocket(embedded: str, tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        client = Client(embedded, username="demo", password="demo-pass-123")
        statuses: list[str] = []
        task = await asyncio.to_thread(client.submit, photo_variant(0), preset="ebay")
        async with aclosing(aiter(client.events(after=0))) as events:
            async for event in events:
                assert event["task_id"] == task["id"]
                statuses.append(event["data"]["status"])
                if event["type"] == "task_complete":
                    break
        saved = await asyncio.to_thread(client.download, task["id"], tmp_path / "result")
        assert saved.suffix == ".jpg" and saved.stat().st_size > 0
        client.close()
        return statuses

    statuses = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert statuses[0] == "pending" and statuses[-1] == "completed"
