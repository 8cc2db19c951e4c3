"""A reconnect storm and a mass gap fill on one real daphne: hundreds of sockets at the same instant.

After a proxy or network cut every client comes back at once; after a Redis blip every socket finds a
hole at once. Each socket must still get exactly its own log, in order, and in time: a handshake not
accepted within daphne's connect timeout (5 s) is closed by daphne itself.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.db import connection
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from notifications.events import group_name
from notifications.models import Event

from ..conftest import accepts, free_port, wait_until
from .support import seed_events, token_for

pytestmark = pytest.mark.django_db(transaction=True)

SOCKETS = 400
STORM_BOUND = 20.0  # seconds for every socket to be synced (measured ~2-4 s on a loaded 2-core machine)


class Daphne:
    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.proc = port, proc


@pytest.fixture
def server(subprocess_env: dict[str, str], tmp_path: Path) -> Iterator[Daphne]:
    if connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"):
        pytest.skip("needs DATABASE_URL=postgres://... and REDIS_URL (shared with the server)")
    port = free_port()
    env = {**subprocess_env, "IMAGEGEN_EMBEDDED_WORKER": "0", "PYTHONPATH": str(django_settings.BASE_DIR),
           "IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP": "100000", "LOG_LEVEL": "WARNING"}
    log = open(tmp_path / "daphne.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                             "imagegen_site.asgi:application"], cwd=django_settings.BASE_DIR, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: accepts(port) or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, (tmp_path / "daphne.log").read_text()
        yield Daphne(port, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        log.close()


def make_users(django_user_model: Any, count: int) -> list[Any]:
    users = django_user_model.objects.bulk_create(django_user_model(username=f"storm{i}") for i in range(count))
    for user in users:
        seed_events(user, 3)
    return users


async def test_hundreds_of_sockets_at_once_all_sync_with_their_own_replay_then_all_fill_a_hole(
        server: Daphne, django_user_model: Any) -> None:
    daphne = server.port
    users = await sync_to_async(make_users)(django_user_model, SOCKETS)
    started = time.monotonic()

    async def one(user: Any) -> tuple[Any, list[int], dict]:
        ws = await connect(f"ws://127.0.0.1:{daphne}/ws/notifications?token={token_for(user)}&after=1",
                           open_timeout=STORM_BOUND, ping_interval=None, max_queue=None)
        seqs: list[int] = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), STORM_BOUND))
            if message["type"] == "sync_complete":
                return ws, seqs, message
            seqs.append(message["seq"])

    # Every handshake at the same instant: no waves.
    opened = await asyncio.gather(*(one(u) for u in users), return_exceptions=True)
    failed = [o for o in opened if isinstance(o, BaseException)]
    assert not failed, f"{len(failed)} of {SOCKETS} sockets failed: {failed[:3]}"
    took = time.monotonic() - started
    assert took < STORM_BOUND
    assert all(seqs == [2, 3] and sync["last_seq"] == 3 and sync["recovered"] for _, seqs, sync in opened)
    sockets = [ws for ws, _, _ in opened]

    # A Redis blip lost seqs 4 and 5 of every user; only 6 is pushed: each socket fills its hole from the log.
    await sync_to_async(lambda: [seed_events(u, 3, start=4) for u in users])()
    lasts = await sync_to_async(lambda: {e.user_id: e.as_message() for e in Event.objects.filter(seq=6)})()
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    await asyncio.gather(*(layer.group_send(group_name(u.pk), {"type": "task.event", "event": lasts[u.pk]})
                           for u in users))

    async def through_six(ws: Any) -> list[int]:
        seqs: list[int] = []
        while not seqs or seqs[-1] < 6:
            message = json.loads(await asyncio.wait_for(ws.recv(), STORM_BOUND))
            if "seq" in message:
                seqs.append(message["seq"])
        return seqs

    filled = await asyncio.gather(*(through_six(ws) for ws in sockets))
    assert all(seqs == [4, 5, 6] for seqs in filled)
    await asyncio.gather(*(ws.close() for ws in sockets))
    print(f"{SOCKETS} sockets at once: all synced in {took:.2f}s")


async def test_a_daphne_going_away_stops_accepting_before_it_says_so(server: Daphne, user: Any) -> None:
    """A handshake that reached a draining server would be cut when it exits, with no answer at all;
    refused, it goes to another server at once (the soak's proxy, a load balancer)."""
    ws = await connect(f"ws://127.0.0.1:{server.port}/ws/notifications?token={token_for(user)}", open_timeout=20)
    assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "sync_complete"
    server.proc.send_signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    # The 1001 went out after the listener stopped: nothing accepts on the port any more.
    assert not accepts(server.port)
