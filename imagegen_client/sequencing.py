"""Handing out a user's events exactly once and in order, whatever the transports deliver.

The server numbers each user's events 1, 2, 3, ... (``seq``) with no gaps, so
one number is enough: the last seq handed out (the resume cursor). Given what
arrives, :class:`Sequencer` decides what to hand out and when the event log
must be read first. It does no I/O: the stream feeds it what the WebSocket
and ``GET /api/events/`` returned and does what each :class:`Step` says.

* an event with ``seq <= cursor`` is a duplicate (a replay racing a push): dropped;
* one with ``seq > cursor + 1`` means a push was lost: the missing range is
  read from the log (``fetch``), and the event waits until that is done;
* ``recovered: false`` (events purged by retention) hands out
  ``{"type": "reset", "last_seq": M}`` before anything that follows it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

Item = dict[str, Any]


@dataclass
class Step:
    """What to do next: hand out ``items`` in order, then, if ``fetch``, read the
    log after :attr:`Sequencer.cursor` and give the page to :meth:`Sequencer.page`."""

    items: list[Item] = field(default_factory=list)
    fetch: bool = False


class Sequencer:
    def __init__(self, cursor: int = 0) -> None:
        #: The last seq handed out: resume with ``after=cursor``.
        self.cursor = cursor
        self._waiting: deque[Item] = deque()  # events held until a fetch fills the gap before them
        self._fetched_for: int | None = None  # the held seq a fetch already ran for
        self._sync: Item | None = None  # a sync_complete whose catch-up is still to check

    def reset_transport(self) -> None:
        """The connection ended: forget what was held for it (a resume replays it)."""
        self._waiting.clear()
        self._fetched_for = None
        self._sync = None

    def live(self, event: Item) -> Step:
        """A pushed event, after ``sync_complete``."""
        self._waiting.append(event)
        return self._drain([])

    def synced(self, replay: list[Item], sync: Item) -> Step:
        """``sync_complete`` and the events replayed before it (held back until now, so a
        reset reaches the caller before the events that follow it)."""
        items: list[Item] = []
        if sync.get("recovered") is False:
            items.append(_reset(sync))
            if replay:
                # Events before the first retained one are gone for good.
                self.cursor = max(self.cursor, int(replay[0]["seq"]) - 1)
        self._waiting.extend(replay)
        self._sync = sync
        return self._drain(items)

    def page(self, page: Item) -> Step:
        """A page of ``GET /api/events/`` (a fetch a step asked for, or a long-poll)."""
        items: list[Item] = []
        events: list[Item] = page.get("events", [])
        if page.get("recovered") is False:
            items.append(_reset(page))
            floor = int(events[0]["seq"]) - 1 if events else int(page.get("last_seq", 0))
            self.cursor = max(self.cursor, floor)
        for event in events:
            seq = int(event["seq"])
            if seq > self.cursor:
                # Within one page the server returns a contiguous run: accept it in order.
                self.cursor = seq
                items.append(event)
        if page.get("has_more"):
            return Step(items, fetch=True)
        return self._drain(items)

    def _drain(self, items: list[Item]) -> Step:
        while self._waiting:
            event = self._waiting[0]
            seq = int(event["seq"])
            if seq <= self.cursor:
                self._waiting.popleft()
                continue
            if seq > self.cursor + 1 and self._fetched_for != seq:
                self._fetched_for = seq
                return Step(items, fetch=True)
            # Next in line, or the log had nothing more before it: hand it out.
            self._waiting.popleft()
            self._fetched_for = None
            self.cursor = seq
            items.append(event)
        sync, self._sync = self._sync, None
        if sync is not None:
            last = int(sync.get("last_seq", 0))
            if sync.get("recovered") is False:
                self.cursor = max(self.cursor, last)
            elif last > self.cursor:
                # The server is ahead of what it replayed: catch up from the log.
                return Step(items, fetch=True)
        return Step(items)


def _reset(message: Item) -> Item:
    return {"type": "reset", "last_seq": int(message.get("last_seq", 0))}
