"""Reading a ``text/event-stream`` answer of the in-process test client, event by event."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Message:
    event: str | None
    id: int | None
    data: dict[str, Any] | None
    comment: str | None = None


class SSEReader:
    def __init__(self, response: Any) -> None:
        self.response = response
        self._chunks = aiter(response.streaming_content)
        self._buffer = ""

    async def next(self, timeout: float = 10) -> Message:
        """The next event or comment block; raises StopAsyncIteration when the stream ended."""
        while "\n\n" not in self._buffer:
            chunk = await asyncio.wait_for(anext(self._chunks), timeout)
            self._buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        block, self._buffer = self._buffer.split("\n\n", 1)
        event = id_ = data = comment = None
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                comment = value
            elif name == "event":
                event = value
            elif name == "id":
                id_ = int(value)
            elif name == "data":
                data = json.loads(value)
        return Message(event, id_, data, comment)

    async def next_event(self, timeout: float = 10) -> Message:
        """The next event, skipping keep-alive comments."""
        while True:
            message = await self.next(timeout)
            if message.comment is None or message.event is not None:
                return message

    async def until_sync(self, timeout: float = 10) -> tuple[list[Message], Message]:
        events = []
        while True:
            message = await self.next_event(timeout)
            if message.event == "sync_complete":
                return events, message
            events.append(message)

    async def ended(self, timeout: float = 10) -> bool:
        """True once the server ended the stream (anything still buffered is dropped)."""
        try:
            while True:
                await asyncio.wait_for(anext(self._chunks), timeout)
        except StopAsyncIteration:
            return True

    async def close(self) -> None:
        """Leave, as a client that disconnects. Under a server, Django cancels the view's
        task; here, close the stream's own iterator (closing Django's wrapper alone does not)."""
        await self._chunks.aclose()  # type: ignore[attr-defined]
        await self.response._iterator.aclose()
