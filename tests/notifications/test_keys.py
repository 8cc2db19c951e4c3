"""API keys on the WebSocket (``?api_key=``) and the long-poll; a revoke closes the key's open sockets."""
from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import ApiKey

from .support import close_code, open_socket, read_until_sync, token_for, ws_application
from channels.testing import WebsocketCommunicator

pytestmark = pytest.mark.django_db(transaction=True)


async def key_socket(raw: str, after: int | None = None) -> WebsocketCommunicator:
    query = f"api_key={raw}" + (f"&after={after}" if after is not None else "")
    ws = WebsocketCommunicator(ws_application(), f"/ws/notifications?{query}")
    ws.scope["client"] = ["127.0.0.1", 50000]
    connected, _ = await ws.connect(timeout=10)
    assert connected
    return ws


async def test_a_key_opens_the_socket_as_its_owner(user: Any, other_user: Any, make_task: Any) -> None:
    mine = await sync_to_async(make_task)()
    await sync_to_async(make_task)(user=other_user)
    _, raw = await sync_to_async(ApiKey.issue)(user=user, name="ws")
    ws = await key_socket(raw, after=0)
    replayed, sync = await read_until_sync(ws)
    assert [e["task_id"] for e in replayed] == [mine.pk] and sync["last_seq"] == 1
    await ws.disconnect()


@pytest.mark.parametrize("raw", ["igk_unknown", "nope"])
async def test_an_unknown_key_is_closed_with_4001(raw: str) -> None:
    assert await close_code(await key_socket(raw)) == 4001


async def test_a_revoke_closes_that_keys_open_sockets_with_4001_and_no_other(user: Any) -> None:
    key, raw = await sync_to_async(ApiKey.issue)(user=user, name="ws")
    by_key, by_token = await key_socket(raw), await open_socket(token_for(user))
    for ws in (by_key, by_token):
        assert (await ws.receive_json_from(10))["type"] == "sync_complete"
    await sync_to_async(key.revoke)()
    assert await close_code(by_key) == 4001
    await by_token.send_json_to({"type": "ping"})
    assert await by_token.receive_json_from(10) == {"type": "pong"}
    assert await close_code(await key_socket(raw)) == 4001  # and it never opens one again
    await by_token.disconnect()


async def test_a_keys_socket_does_not_expire_and_cannot_be_refreshed(user: Any) -> None:
    _, raw = await sync_to_async(ApiKey.issue)(user=user, name="ws")
    ws = await key_socket(raw)
    await ws.receive_json_from(10)
    await ws.send_json_to({"type": "refresh", "token": token_for(user)})
    assert await ws.receive_json_from(10) == {
        "type": "error", "detail": "Token not refreshed: this connection uses an API key, which does not expire."}
    await ws.disconnect()


async def test_the_long_poll_takes_an_api_key(user: Any, make_task: Any, async_client: Any) -> None:
    task = await sync_to_async(make_task)()
    key, raw = await sync_to_async(ApiKey.issue)(user=user, name="poll")
    response = await async_client.get("/api/events/?after=0", headers={"Authorization": f"Api-Key {raw}"})
    assert [e["task_id"] for e in response.json()["events"]] == [task.pk]
    await sync_to_async(key.revoke)()
    response = await async_client.get("/api/events/?after=0", headers={"Authorization": f"Api-Key {raw}"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid or revoked API key."})
