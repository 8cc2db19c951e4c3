"""Waiting for one task's finishing event: what ``Prefer: wait=N`` on submit waits on.

Registered into ``generation.waiting`` by ``NotificationsConfig.ready()``
(generation never imports us). The same mechanism as the long-poll: a fresh
channel joins the user's group, the task's state is read once more (an event
that committed before the join would otherwise be missed), then pushes are
received until the task's own ``task_complete``/``task_failed``/``task_canceled``
or the timeout. Other events of the user only wake the loop; no thread is held
and nothing is polled while the channel layer works.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from channels.layers import get_channel_layer

from .events import group_name
from .models import Event
from .views import leave

logger = logging.getLogger(__name__)

FINISHING = {Event.Type.COMPLETE, Event.Type.FAILED, Event.Type.CANCELED}
# With the channel layer unreachable nothing can wake us: look at the task this often
# until the deadline (only during such an outage).
LAYER_DOWN_PAUSE = 2.0


async def wait_for_task(user_id: int, task_id: int, timeout: float,
                        finished: Callable[[], Awaitable[bool]]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    layer = get_channel_layer()
    group = group_name(user_id)
    channel: str | None = None
    try:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
    except Exception as exc:
        logger.warning("Prefer: wait cannot listen on the channel layer (%s); checking the task every %.0f s",
                       exc, LAYER_DOWN_PAUSE)
        if channel is not None:
            await leave(layer, group, channel, False)
        while not await finished() and loop.time() < deadline:
            await asyncio.sleep(min(LAYER_DOWN_PAUSE, max(deadline - loop.time(), 0)))
        return
    dropped = False  # a cancelled receive() already released the channel
    try:
        if await finished():
            return
        try:
            async with asyncio.timeout_at(deadline):  # cancels the receive, which releases the channel
                while True:
                    message = await layer.receive(channel)
                    event = message.get("event") or {}
                    if event.get("task_id") == task_id and event.get("type") in FINISHING:
                        return
        except TimeoutError:
            dropped = True
    finally:
        await leave(layer, group, channel, dropped)
