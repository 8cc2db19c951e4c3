"""Scale-out with real processes: two daphne servers, three workers, one Redis, one PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from websockets.client import ClientProtocol
from websockets.frames import Close
from websockets.uri import parse_uri

from generation.models import GenerationTask
from notifications.models import Event, EventCounter
from tests.conftest import wait_until
from tests.notifications.support import seed_events, token_for

from .client import events_through, frame, open_ws, until_sync

pytestmark = pytest.mark.django_db(transaction=True)


async def no_more_events(ws: Any) -> None:
    """A ping's pong comes after anything already sent: nothing may precede it."""
    await ws.send(json.dumps({"type": "ping"}))
    assert await frame(ws) == {"type": "pong"}


async def test_one_users_events_from_three_workers_reach_sockets_on_two_servers_once_in_order(
        cluster: Any, make_user: Any, make_task: Any) -> None:
    first, second = cluster.daphne("daphne-a"), cluster.daphne("daphne-b")
    for name in ("worker-1", "worker-2", "worker-3"):
        # Tasks that take a moment, so the three workers overlap on this user's tasks.
        cluster.worker(name, IMAGEGEN_BACKEND="tests.generation.backends.SlowBackend", TEST_BACKEND_SECONDS="0.3")
    user = await sync_to_async(make_user)()
    token = token_for(user)
    sockets = [await open_ws(first, token, after=0), await open_ws(first, token), await open_ws(second, token, after=0)]
    for ws in sockets:
        assert (await until_sync(ws))[1] == {"type": "sync_complete", "last_seq": 0, "recovered": True}

    tasks = [await sync_to_async(make_task)(user=user) for _ in range(30)]
    await sync_to_async(wait_until)(
        lambda: GenerationTask.objects.filter(pk__in=[t.pk for t in tasks], status="completed").count() == 30,
        timeout=60)
    final = await sync_to_async(EventCounter.last_seq_for)(user.pk)
    logged = await sync_to_async(lambda: list(Event.objects.filter(user=user).values_list("seq", flat=True)))()
    assert sorted(logged) == list(range(1, final + 1))  # gapless across three writers
    assert final >= 90  # created, processing, complete for each (plus progress steps, timing permitting)
    workers = await sync_to_async(lambda: set(
        GenerationTask.objects.filter(user=user).values_list("worker__name", flat=True)))()
    assert len(workers) >= 2, workers  # the workers really raced on this user's tasks

    for ws in sockets:
        received = await events_through(ws, final)
        assert [e["seq"] for e in received] == list(range(1, final + 1))
        await no_more_events(ws)
    per_task = [e for e in received if e["task_id"] == tasks[0].pk]
    assert [e["type"] for e in per_task][0] == "task_created" and per_task[-1]["type"] == "task_complete"

    late = await open_ws(second, token, after=final // 2)  # resumes on the other server
    replayed, sync = await until_sync(late)
    assert [e["seq"] for e in replayed] == list(range(final // 2 + 1, final + 1))
    assert sync == {"type": "sync_complete", "last_seq": final, "recovered": True}
    for ws in [*sockets, late]:
        await ws.close()


async def test_a_burst_of_300_sockets_all_sync_and_all_get_a_live_event(cluster: Any, make_user: Any,
                                                                        make_task: Any) -> None:
    port = cluster.daphne()
    users = [await sync_to_async(make_user)() for _ in range(30)]
    tokens = [token_for(u) for u in users]
    started = time.monotonic()
    sockets = await asyncio.gather(*(open_ws(port, tokens[i % 30]) for i in range(300)))
    syncs = await asyncio.gather(*(frame(ws, 60) for ws in sockets))
    assert [s["type"] for s in syncs] == ["sync_complete"] * 300
    connected = time.monotonic() - started

    tasks = [await sync_to_async(make_task)(user=u) for u in users]
    lives = await asyncio.gather(*(frame(ws, 60) for ws in sockets))
    for i, live in enumerate(lives):
        assert (live["seq"], live["type"], live["task_id"]) == (1, "task_created", tasks[i % 30].pk)
    await asyncio.gather(*(ws.close() for ws in sockets))
    assert "MaxConnectionsError" not in cluster.log("daphne")
    print(f"300 sockets connected and synced in {connected:.2f}s")


def test_a_client_that_stops_reading_is_closed_with_4008_instead_of_buffered(cluster: Any, make_user: Any) -> None:
    port = cluster.daphne(IMAGEGEN_WS_MAX_SEND_BACKLOG_BYTES="65536")
    user = make_user()
    seed_events(user, 30_000)  # ~10 MB of replay: more than the kernel buffers hold
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws/notifications?token={token_for(user)}&after=0"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    # ... and never read, until the server has given up on us.
    wait_until(lambda: "Closing slow WebSocket" in cluster.log("daphne"), timeout=60)
    events, close, reset = 0, None, False
    sock.settimeout(20)
    try:
        while close is None:
            data = sock.recv(1 << 20)
            if not data:
                break
            protocol.receive_data(data)
            for received in protocol.events_received():
                if getattr(received, "opcode", None) is not None and received.opcode.name == "CLOSE":
                    close = Close.parse(received.data)
                elif hasattr(received, "data") and received.data[:1] == b"{":
                    events += 1
    except ConnectionResetError:
        # On a loaded machine daphne's close handshake can time out before we read
        # its close frame; it then resets the connection and the frame is lost with it.
        reset = True
    sock.close()
    if reset:
        assert "Closing slow WebSocket of user %d with 4008" % user.pk in cluster.log("daphne")
    else:
        assert close is not None and close.code == 4008 and events > 0
    assert events < 30_000  # it stopped early instead of buffering the whole replay
