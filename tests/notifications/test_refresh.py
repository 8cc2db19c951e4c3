"""In-band token refresh on the WebSocket: the socket outlives its tokens, with no reconnect and no replay."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from .support import close_code, open_socket, read_events, token_for

pytestmark = pytest.mark.django_db(transaction=True)

LIFETIME = timedelta(seconds=3)
# Each refresh goes out this long before the current token expires: room for a loaded machine.
MARGIN = 1.5


async def refresh(ws: Any, token: Any) -> dict:
    await ws.send_json_to({"type": "refresh", "token": token})
    return await ws.receive_json_from(10)


async def test_a_socket_outlives_several_token_lifetimes_with_no_reconnect_and_no_replay(
        user: Any, make_task: Any) -> None:
    task = await sync_to_async(make_task)()
    opened = time.monotonic()
    ws = await open_socket(token_for(user, lifetime=LIFETIME), after=0)
    seen = [f.get("seq") for f in [await ws.receive_json_from(10), await ws.receive_json_from(10)]]
    assert seen == [1, None]  # the replay, then sync_complete
    for _ in range(4):  # each token refreshed MARGIN s before it ends: 2 lifetimes and more in all
        await ws.receive_nothing(timeout=LIFETIME.total_seconds() - MARGIN)
        fresh = token_for(user, lifetime=LIFETIME)
        answer = await refresh(ws, fresh)
        assert answer["type"] == "refreshed"
        assert abs(datetime.fromisoformat(answer["expires_at"]).timestamp() - (time.time() + 3)) < 1.5
        await sync_to_async(task.cancel if task.status != "canceled" else task.retry)()
        task = await sync_to_async(type(task).objects.get)(pk=task.pk)
        seen += [e["seq"] for e in await read_events(ws, 1)]  # live events only, never a replay
    assert time.monotonic() - opened > 2 * LIFETIME.total_seconds()
    assert seen == [1, None, 2, 3, 4, 5]
    # Without another refresh, the last token's expiry closes it.
    assert await close_code(ws, timeout=5) == 4001


@pytest.mark.parametrize("kind", ["bad", "expired", "another user's", "missing"])
async def test_a_bad_refresh_changes_nothing_and_is_logged(user: Any, other_user: Any, kind: str,
                                                          caplog: Any) -> None:
    token = {"bad": "nope", "expired": token_for(user, lifetime=timedelta(seconds=-1)),
             "another user's": token_for(other_user), "missing": None}[kind]
    detail = {"bad": "the token is invalid or expired.", "expired": "the token is invalid or expired.",
              "another user's": "the token belongs to another user.",
              "missing": "refresh needs token: an access token."}[kind]
    ws = await open_socket(token_for(user, lifetime=LIFETIME))
    assert (await ws.receive_json_from(10))["type"] == "sync_complete"
    caplog.set_level(logging.WARNING, logger="notifications.consumers")
    assert await refresh(ws, token) == {"type": "error", "detail": f"Token not refreshed: {detail}"}
    assert f"WebSocket refresh refused for user {user.pk}" in caplog.text and detail in caplog.text
    started = time.monotonic()
    assert await close_code(ws, timeout=5) == 4001  # the old expiry holds
    assert time.monotonic() - started < LIFETIME.total_seconds() + 2


async def test_the_new_tokens_expiry_counts_even_when_it_is_sooner(user: Any) -> None:
    ws = await open_socket(token_for(user, lifetime=timedelta(minutes=5)))
    await ws.receive_json_from(10)
    assert (await refresh(ws, token_for(user, lifetime=timedelta(seconds=1))))["type"] == "refreshed"
    assert await close_code(ws, timeout=5) == 4001
