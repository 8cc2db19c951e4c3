"""The Python client and its CLI against a real daphne + worker."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import zipfile
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from generation.models import Batch, GenerationTask
from imagegen_client import Backoff, Client
from notifications.models import EventCounter
from tests.conftest import wait_until

from .conftest import BASE_DIR, SLOW, LiveServer, photo_variant

pytestmark = pytest.mark.django_db(transaction=True)


def cli(server: LiveServer, user: Any, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "IMAGEGEN_URL": server.url, "IMAGEGEN_USERNAME": user.username,
           "IMAGEGEN_PASSWORD": "seller-pass-123", "PYTHONPATH": str(BASE_DIR)}
    return subprocess.Popen([sys.executable, "-m", "imagegen_client", *args], cwd=BASE_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(server: LiveServer, user: Any, *args: str, timeout: float = 90) -> tuple[int, str, str]:
    proc = cli(server, user, *args)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for index in range(count):
        path = folder / f"product-{index}.jpg"
        path.write_bytes(photo_variant(index))
        paths.append(path)
    return paths


def last_seq_of(user: Any) -> int:
    """Read from a helper thread; close its connection, or the test database cannot be dropped."""
    try:
        return EventCounter.objects.get(user=user).last_seq
    finally:
        connection.close()


def archive_names(folder: Path) -> list[str]:
    """Every output file in the folder's batch archives (the manifests left out)."""
    names: list[str] = []
    for path in sorted(folder.glob("batch-*.zip")):
        with zipfile.ZipFile(path) as archive:
            assert "manifest.csv" in archive.namelist()
            names += [n for n in archive.namelist() if n != "manifest.csv"]
    return sorted(names)


def test_a_folder_goes_up_in_batches_and_comes_back_as_archives(live_server_factory: Any, seller: Any,
                                                                tmp_path: Path) -> None:
    server = live_server_factory()
    photos(tmp_path / "in", 5)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"this is not a photo")
    out_dir = tmp_path / "out"

    code, out, err = run_cli(server, seller, "batch", str(tmp_path / "in"), "--out", str(out_dir),
                             "--chunk-size", "3")

    assert code == 1, err  # the broken file was refused, so the run says so
    batches = list(Batch.objects.filter(user=seller).order_by("id"))
    assert [b.total for b in batches] == [2, 3]  # [broken, product-0, product-1] went up without broken.jpg
    assert sorted(p.name for p in out_dir.glob("*.zip")) == [f"batch-{b.pk}.zip" for b in batches]
    assert archive_names(out_dir) == [f"product-{i}.jpg" for i in range(5)]
    assert "5 done" in out and "broken.jpg" in out

    code, out, err = run_cli(server, seller, "batch", str(tmp_path / "in"), "--out", str(out_dir),
                             "--chunk-size", "3")

    assert code == 1, err
    assert Batch.objects.filter(user=seller).count() == 2  # nothing submitted twice
    assert GenerationTask.objects.filter(user=seller).count() == 5


def test_a_batch_interrupted_by_ctrl_c_finishes_on_the_next_run(live_server_factory: Any, seller: Any,
                                                                tmp_path: Path) -> None:
    server = live_server_factory(SLOW, TEST_BACKEND_SECONDS="1.5")
    photos(tmp_path / "in", 5)
    out_dir = tmp_path / "out"

    first = cli(server, seller, "batch", str(tmp_path / "in"), "--out", str(out_dir))
    wait_until(lambda: GenerationTask.objects.filter(user=seller, status="processing").exists(), timeout=60)
    first.send_signal(signal.SIGINT)  # Ctrl-C while the batch is still running
    _, err = first.communicate(timeout=30)
    assert first.returncode == 130, err
    assert "Run the same command again" in err
    assert not list(out_dir.glob("*.zip"))

    code, out, err = run_cli(server, seller, "batch", str(tmp_path / "in"), "--out", str(out_dir))

    assert code == 0, err
    batch = Batch.objects.get(user=seller)  # nothing submitted twice
    assert batch.status == "completed" and GenerationTask.objects.filter(user=seller).count() == 5
    assert archive_names(out_dir) == [f"product-{i}.jpg" for i in range(5)]


def test_submit_wait_prints_the_finished_task(live_server_factory: Any, seller: Any, tmp_path: Path) -> None:
    server = live_server_factory()
    photo = tmp_path / "shoe.jpg"
    photo.write_bytes(photo_variant(1))

    code, out, err = run_cli(server, seller, "submit", str(photo), "--wait", "--preset", "etsy",
                             "--out", str(tmp_path / "result"))

    assert code == 0, err
    assert '"status":"completed"' in out and '"preset":"etsy"' in out
    assert (tmp_path / "result.jpg").stat().st_size > 0


async def test_events_resume_exactly_after_the_server_crashes(live_server_factory: Any, seller: Any) -> None:
    server: LiveServer = await asyncio.to_thread(live_server_factory, SLOW, TEST_BACKEND_SECONDS="2")
    client = Client(server.url, username=seller.username, password="seller-pass-123")
    stream = client.events(after=0, backoff=Backoff(base=0.2, cap=1.0))
    seen: list[dict[str, Any]] = []
    tasks = [await asyncio.to_thread(client.submit, photo_variant(i)) for i in range(3)]
    ids = {task["id"] for task in tasks}
    finished: set[int] = set()
    crashed = False

    async with aclosing(aiter(stream)) as events:
        async def read() -> None:
            nonlocal crashed
            async for event in events:
                seen.append(event)
                if event["data"]["status"] == "processing" and not crashed:
                    crashed = True
                    # Kill the web process mid-run; the worker goes on producing events.
                    await asyncio.to_thread(server.kill_web)
                    await asyncio.sleep(1.0)
                    await asyncio.to_thread(server.start_web)
                if event["data"]["status"] == "completed":
                    finished.add(event["task_id"])
                    if finished == ids:
                        return

        await asyncio.wait_for(read(), 90)

    last = await asyncio.to_thread(last_seq_of, seller)
    assert crashed and stream.connects >= 2
    assert [e["seq"] for e in seen] == list(range(1, last + 1))  # every event once, in order
    assert {e["type"] for e in seen} >= {"task_created", "task_update", "task_complete"}
    client.close()


async def test_events_outlive_expiring_tokens_with_no_reconnect(live_server_factory: Any, seller: Any) -> None:
    # Three token lifetimes; the client refreshes in band 1.5 s before each expiry.
    server: LiveServer = await asyncio.to_thread(live_server_factory, SLOW, TEST_BACKEND_SECONDS="9",
                                                 JWT_ACCESS_SECONDS="3")
    client = Client(server.url, username=seller.username, password="seller-pass-123")
    stream = client.events(after=0, backoff=Backoff(base=0.2, cap=1.0))
    task = await asyncio.to_thread(client.submit, photo_variant(0))
    seen: list[int] = []

    async with aclosing(aiter(stream)) as events:
        async def read() -> None:
            async for event in events:
                seen.append(event["seq"])
                if event["task_id"] == task["id"] and event["data"]["status"] == "completed":
                    return

        await asyncio.wait_for(read(), 60)

    assert stream.connects == 1  # refreshed in band: never closed with 4001, nothing replayed
    assert seen == list(range(1, await asyncio.to_thread(last_seq_of, seller) + 1))
    client.close()
