"""The raw-Channels peer of the realtime benchmark: what the WebSocket push costs with nothing on top.

``bench/bench_realtime.py --compare`` serves this module with daphne beside imagegen's own
``imagegen_site.asgi:application`` and measures both with the same clients:

    daphne bench.peers.raw_channels:application      # the server
    python bench/peers/raw_channels.py --produce SPEC OUT   # a producer (the benchmark starts it)

The server is a plain ``AsyncWebsocketConsumer``: it joins one group per user (the user is whatever
``?user=`` says), accepts, and forwards each group message's ``event`` as one text frame. No auth,
no Origin check, no event log, no seq, no replay, no presence, no limits. The channel layer is the
project's own ``CHANNEL_LAYERS`` (``channels_redis.pubsub.RedisPubSubChannelLayer`` on ``REDIS_URL``,
the same prefix and pool size), so both servers read the same kind of pub/sub message from the same
Redis. The producer calls ``group_send`` directly, one awaited call per event, and stamps the wall
clock just before each.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings

if not settings.configured:
    # The project's layer settings, read from its settings module (plain assignments: importing it
    # sets nothing up); nothing else of Django is configured.
    from imagegen_site import settings as project

    settings.configure(CHANNEL_LAYERS=project.CHANNEL_LAYERS, USE_TZ=True)

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

PATH = "ws/raw"


def group_for(user: str) -> str:
    # Not imagegen's "user.N": the two servers never share a group, even when run side by side.
    return f"raw.user.{user}"


class RawConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = (parse_qs(self.scope["query_string"].decode()).get("user") or ["0"])[0]
        self.group = group_for(user)
        # Joined before the accept: once the client's handshake completes, it receives every push.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def task_event(self, message: dict) -> None:
        await self.send(text_data=json.dumps(message["event"]))


application = ProtocolTypeRouter({"websocket": URLRouter([path(PATH, RawConsumer.as_asgi())])})


async def _produce(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec``: ``users``, ``rate`` (events/s over all users, round-robin), ``seconds``, ``after``
    (each user's first seq - 1) and ``event`` (the frame body, imagegen's message shape and size)."""
    layer = get_channel_layer()
    users, rate, seconds = spec["users"], spec["rate"], spec["seconds"]
    seqs = {u: int(spec["after"].get(str(u), 0)) for u in users}
    body = spec["event"]
    await layer.group_send("raw.warmup", {"type": "warmup"})  # the connection, not a measured event
    stamps: list[tuple[int, int, float]] = []
    cpu = time.process_time()
    start = time.monotonic() + 0.2
    n = 0
    while True:
        due = start + n / rate
        if due > start + seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        user = users[n % len(users)]
        seqs[user] += 1
        stamps.append((user, seqs[user], time.time()))
        await layer.group_send(group_for(str(user)), {"type": "task.event", "event": {**body, "seq": seqs[user]}})
        n += 1
    elapsed = time.monotonic() - start
    return {"stamps": stamps, "elapsed": elapsed, "cpu": time.process_time() - cpu}


def produce(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    Path(out_path).write_text(json.dumps(asyncio.run(_produce(spec))))


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--produce":
        raise SystemExit(f"usage: {os.path.basename(sys.argv[0])} --produce SPEC OUT")
    produce(sys.argv[2], sys.argv[3])
