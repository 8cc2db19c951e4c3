"""Prefer: wait holds no thread: the real ASGI application in this process, with every sync call of
every request squeezed through one thread and the shared pool cut to two."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.asgi import get_asgi_application
from django.db import connection, connections
from rest_framework_simplejwt.tokens import AccessToken

from generation.waiting import parse_prefer_wait
from tests.conftest import product_photo
from tests.notifications.support import isolate_channel_layer

isolate_channel_layer()


@pytest.mark.parametrize(("header", "seconds"), [
    (None, None), ("", None), ("respond-async", None), ("wait=5", 5), ("respond-async, wait=60", 60),
    ("return=minimal; foo=bar, WAIT = 7", 7), ('wait="12"', 12), ("waiting=3", None),
])
def test_the_prefer_header_is_read_as_rfc_7240_says(header, seconds):
    assert parse_prefer_wait(header) == seconds


@pytest.mark.django_db(transaction=True)
async def test_twenty_waits_all_answer_on_time_through_one_sync_thread_and_a_pool_of_two(user: Any) -> None:
    if connection.vendor != "postgresql":
        # pytest-django's SQLite test database is in memory with a shared cache, where writers in
        # several threads fail at once with "table is locked" (no busy timeout); the embedded
        # default's file database waits instead: tests/e2e/test_intake.py waits there.
        pytest.skip("concurrent writers from threads need PostgreSQL or a SQLite file")
    token = await sync_to_async(lambda: str(AccessToken.for_user(user)))()
    app = get_asgi_application()
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=2)
    loop.set_default_executor(pool)
    sync_thread = ThreadPoolExecutor(max_workers=1)
    photo = product_photo()
    try:
        # Every thread-sensitive call of every request (Django's sync signals, DRF's
        # rendering...) goes to this one thread: a wait that held it would serialise.
        async with ThreadSensitiveContext(executor=sync_thread):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                         headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
                async def burst(**headers: str) -> tuple[float, list[httpx.Response]]:
                    started = time.monotonic()
                    answers = await asyncio.gather(*(
                        http.post("/api/tasks/", files={"image": ("shoe.jpg", photo)}, headers=headers)
                        for _ in range(20)
                    ))
                    return time.monotonic() - started, answers

                plain, _ = await burst()  # what twenty submits cost here without waiting
                took, answers = await burst(Prefer="wait=2")
    finally:
        # Each thread's own database connection must go before the test database does.
        barrier = threading.Barrier(2, timeout=10)

        def close_here(wait_for_the_other: bool) -> None:
            if wait_for_the_other:
                barrier.wait()
            connections.close_all()

        await asyncio.gather(loop.run_in_executor(pool, close_here, True), loop.run_in_executor(pool, close_here, True),
                             loop.run_in_executor(sync_thread, close_here, False))
        sync_thread.shutdown(wait=True)
        pool.shutdown(wait=True)
    assert [r.status_code for r in answers] == [201] * 20, answers[0].text
    assert {r.json()["status"] for r in answers} == {"pending"}
    assert {r.headers["Preference-Applied"] for r in answers} == {"wait=2"}
    print(f"20 submits through 1 sync thread + a pool of 2: {plain:.2f}s; the same with wait=2: {took:.2f}s")
    # One thread held per wait would need at least 20 x 2 s / 2 threads = 20 s.
    assert 2 <= took < plain + 2 + 2, (plain, took)
