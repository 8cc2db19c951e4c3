"""Python client for imagegen: submit product photos, follow their tasks live, download results.

Imports no Django; installs on its own (``pip install ./imagegen_client``). See
``docs/clients.md`` and ``imagegen --help`` (or ``python -m imagegen_client --help``).
"""
from __future__ import annotations

from .auth import ApiKeyAuth, TokenAuth, TokenSource
from .backoff import Backoff
from .client import Batch, Client, Task
from .errors import ErrorCode, ImagegenError, StreamError
from .events import Event, EventStream

__all__ = [
    "ApiKeyAuth", "Backoff", "Batch", "Client", "ErrorCode", "Event", "EventStream", "ImagegenError", "StreamError", "Task",
    "TokenAuth",
    "TokenSource",
]
