"""Reading the event log in pages: shared by the WebSocket replay and ``GET /api/events/``.

The log is a gapless prefix per user (``EventCounter`` hands out seqs under a
row lock, so seq N+1 cannot commit before N). A page is therefore "every
committed event after N, oldest first, up to a limit", and the only way a page
can start above N+1 is that retention purged the events in between.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async

from .models import Event, EventCounter

PAGE_SIZE = 500  # the most events per /api/events/ page (docs/api.md); also bounds one replay step

# Seqs are signed 64-bit (bigint): every seq a log can hold is a valid cursor;
# a larger "after" could not be compared in SQL, so it is a 4xx (SEQ_RANGE).
MAX_SEQ = 2**63 - 1
SEQ_RANGE = f"a non-negative integer, at most {MAX_SEQ}"


def parse_seq(value: Any) -> int | None:
    """A non-negative seq from a query string or JSON value, else None."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEQ:
        return value
    return None


@dataclass
class Page:
    events: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    has_more: bool = False
    recovered: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "last_seq": self.last_seq, "has_more": self.has_more,
                "recovered": self.recovered}


def read_page(user_id: int, after: int, limit: int = PAGE_SIZE) -> Page:
    """Events with seq > ``after``, oldest first, at most ``limit``.

    ``last_seq`` is where the reader stands afterwards: the last event's seq, or
    the user's newest seq when nothing is newer (so it is the next ``after``).
    ``recovered`` is False when events after ``after`` were purged, or when
    ``after`` is ahead of the log (a client from another database): either
    way the client must reload its state from ``GET /api/tasks/``.
    """
    rows = _fetch(user_id, after, limit)
    if not rows:
        newest = EventCounter.last_seq_for(user_id)
        if newest > after:
            # Either purged, or committed between the two reads: look once more.
            rows = _fetch(user_id, after, limit)
        if not rows:
            return Page([], newest, False, newest == after)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page([row.as_message() for row in rows], rows[-1].seq, has_more, rows[0].seq == after + 1)


def _fetch(user_id: int, after: int, limit: int) -> list[Event]:
    # Served by the (user, seq) unique index; one row more tells whether there is more.
    return list(Event.objects.filter(user_id=user_id, seq__gt=after).order_by("seq")[: limit + 1])


# Off the event loop, in the default thread pool rather than Django's one sync
# thread: a burst of reconnects must not queue behind each other (or behind
# sync HTTP views); each thread keeps its own connection, closed when stale.
aread_page = database_sync_to_async(read_page, thread_sensitive=False)
alast_seq = database_sync_to_async(EventCounter.last_seq_for, thread_sensitive=False)
