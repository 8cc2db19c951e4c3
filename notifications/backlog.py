"""How many bytes the ASGI server still holds unsent for one WebSocket.

ASGI has no back-pressure for ``websocket.send``: daphne hands every frame to
Twisted at once and Twisted buffers without bound, so a client that reads
slower than its events arrive (or not at all) grows the server's memory. The
consumer checks this number after sends and closes such a client (4008); it
reconnects and resumes from the log at its own pace.

Daphne gives each application ``functools.partial(server.handle_reply,
protocol)`` as its ``send``; the protocol's transport is a Twisted
``FileDescriptor`` whose unsent bytes are ``dataBuffer[offset:]`` plus the
pending ``_tempDataBuffer`` chunks. Other servers (or the test communicator)
give None: unknown, never closed for it.
"""
from __future__ import annotations

import functools
from typing import Any


def send_backlog(send: Any) -> int | None:
    if not isinstance(send, functools.partial) or not send.args:
        return None
    transport = getattr(send.args[0], "transport", None)
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen  # type: ignore[union-attr]
    except (AttributeError, TypeError):
        return None
