"""What a real daphne does at the edges: close frames (1009 for a frame over its limit, 1001 when
it is stopped) and a multipart body it cannot parse itself."""
from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from websockets.exceptions import ConnectionClosed

from tests.notifications.support import token_for

from .client import open_ws, until_sync

pytestmark = pytest.mark.django_db(transaction=True)


async def closed_by_server(ws: Any, timeout: float = 20) -> Any:
    """The close frame the server sent (fails if the connection just dropped)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    assert closed.value.rcvd is not None, f"no close frame: {closed.value!r}"
    return closed.value.rcvd


async def test_a_frame_over_a_mebibyte_is_closed_with_1009_and_a_reason(cluster: Any, make_user: Any) -> None:
    port = cluster.daphne()
    ws = await open_ws(port, token_for(await sync_to_async(make_user)()))
    await until_sync(ws)
    await ws.send('{"type": "ping", "pad": "' + "x" * (1024 * 1024 + 16) + '"}')
    close = await closed_by_server(ws)
    assert close.code == 1009
    assert "exceeds payload limit of 1048576 octets" in close.reason


async def test_a_frame_under_the_limit_is_an_error_and_the_connection_stays(cluster: Any, make_user: Any) -> None:
    port = cluster.daphne()
    ws = await open_ws(port, token_for(await sync_to_async(make_user)()))
    await until_sync(ws)
    await ws.send('{"type": "ping", "pad": "' + "x" * 100_000 + '"}')
    assert (await until_error(ws))["detail"] == "Frame too large (at most 4096 bytes)."
    await ws.send('{"type": "ping"}')
    assert (await until_error(ws, "pong"))["type"] == "pong"
    await ws.close()


async def until_error(ws: Any, kind: str = "error") -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if message["type"] == kind:
            return message


async def test_sigterm_closes_every_socket_with_1001(cluster: Any, make_user: Any) -> None:
    port = cluster.daphne()
    sockets = [await open_ws(port, token_for(await sync_to_async(make_user)())) for _ in range(3)]
    for ws in sockets:
        await until_sync(ws)
    daphne = cluster.procs[0][1]
    daphne.send_signal(signal.SIGTERM)
    closes = await asyncio.gather(*(closed_by_server(ws) for ws in sockets))
    assert [(c.code, c.reason) for c in closes] == [(1001, "server shutting down; reconnect")] * 3
    assert await asyncio.to_thread(daphne.wait, 15) == 0
    assert "closing 3 WebSocket(s) with 1001" in cluster.log("daphne")


def test_daphne_itself_refuses_a_multipart_body_without_a_boundary(cluster: Any, user: Any) -> None:
    # Twisted parses every multipart POST before daphne calls the application and
    # answers a bare 400 when it cannot: the API's JSON 400 for this case (see
    # tests/generation/test_api_multipart.py) is only reachable under another
    # server. Documented as a limit; this test notices if daphne changes.
    import httpx

    from generation.models import GenerationTask

    port = cluster.daphne()
    headers = {"Authorization": f"Bearer {token_for(user)}"}
    bad = httpx.post(f"http://127.0.0.1:{port}/api/tasks/", content=b"abc",
                     headers={**headers, "Content-Type": "multipart/form-data"}, timeout=20)
    assert (bad.status_code, bad.content) == (400, b"")
    assert not GenerationTask.objects.exists()
    listing = httpx.get(f"http://127.0.0.1:{port}/api/tasks/", headers=headers, timeout=20)
    assert listing.status_code == 200  # the server is unharmed
