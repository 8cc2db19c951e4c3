"""Retention: batched purges, and resuming from before the oldest kept event."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from notifications.models import Event
from notifications.retention import purge_events

from .support import open_socket, read_until_sync, seed_events, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_purges_old_events_in_batches_and_counts_them(user: Any, other_user: Any,
                                                         django_assert_num_queries: Any) -> None:
    seed_events(user, 7, age=timedelta(days=8))
    seed_events(other_user, 3, age=timedelta(days=8))
    seed_events(user, 2, start=8)
    # 10 old rows by 4: one DELETE ... WHERE id IN (SELECT ... LIMIT 4) per batch, the last one short.
    with django_assert_num_queries(3):
        assert purge_events(timedelta(days=7), batch_size=4) == 10
    assert list(Event.objects.values_list("user_id", "seq")) == [(user.pk, 8), (user.pk, 9)]
    assert purge_events(timedelta(days=7)) == 0


def test_it_rejects_an_empty_batch() -> None:
    with pytest.raises(ValueError):
        purge_events(timedelta(days=1), batch_size=0)


async def test_resuming_from_before_the_oldest_kept_event_is_not_recovered(user: Any, async_client: Any) -> None:
    await sync_to_async(seed_events)(user, 10, age=timedelta(days=8))
    await sync_to_async(seed_events)(user, 3, start=11)
    assert await sync_to_async(purge_events)(timedelta(days=7)) == 10
    headers = {"Authorization": f"Bearer {token_for(user)}"}

    body = (await async_client.get("/api/events/?after=4", headers=headers)).json()
    assert ([e["seq"] for e in body["events"]], body["last_seq"], body["recovered"]) == ([11, 12, 13], 13, False)
    body = (await async_client.get("/api/events/?after=10", headers=headers)).json()
    assert ([e["seq"] for e in body["events"]], body["recovered"]) == ([11, 12, 13], True)  # nothing lost

    ws = await open_socket(token_for(user), after=4)
    replayed, sync = await read_until_sync(ws)
    assert [e["seq"] for e in replayed] == [11, 12, 13]
    assert sync == {"type": "sync_complete", "last_seq": 13, "recovered": False}
    await ws.disconnect()


async def test_when_everything_was_purged_the_client_learns_where_the_log_stands(user: Any,
                                                                                 async_client: Any) -> None:
    await sync_to_async(seed_events)(user, 5, age=timedelta(days=8))
    await sync_to_async(purge_events)(timedelta(days=7))
    headers = {"Authorization": f"Bearer {token_for(user)}"}
    body = (await async_client.get("/api/events/?after=2&wait=5", headers=headers)).json()
    assert body == {"events": [], "last_seq": 5, "has_more": False, "recovered": False}  # no wait: nothing to wait for
    assert (await async_client.get("/api/events/?after=5", headers=headers)).json()["recovered"] is True
    ws = await open_socket(token_for(user), after=2)
    assert await read_until_sync(ws) == ([], {"type": "sync_complete", "last_seq": 5, "recovered": False})
    await ws.disconnect()
