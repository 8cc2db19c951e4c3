"""Python client for imagegen: submit product photos, follow their tasks live, download results.

Imports no Django. See ``docs/clients.md`` and ``python -m imagegen_client --help``.
"""
from __future__ import annotations

from .client import Client, ImagegenError, Task
from .events import Backoff, Event, EventStream, StreamError

__all__ = ["Backoff", "Client", "Event", "EventStream", "ImagegenError", "StreamError", "Task"]
