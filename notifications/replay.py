"""Reading the event log in pages: shared by the WebSocket replay and ``GET /api/events/``.

The log is a gapless prefix per user (``EventCounter`` hands out seqs under a
row lock, so seq N+1 cannot commit before N). A page is therefore "every
committed event after N, oldest first, up to a limit", and the only way a page
can start above N+1 is that retention purged the events in between.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import reduce
from operator import or_
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber

from .batching import Batcher
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
    return _page(user_id, after, limit, _fetch(user_id, after, limit))


def _page(user_id: int, after: int, limit: int, rows: list[Event], newest: int | None = None) -> Page:
    """The page of ``rows`` (seq > after, oldest first, at most limit + 1); ``newest``: the user's
    counter when the caller read it already."""
    if not rows:
        newest = EventCounter.last_seq_for(user_id) if newest is None else newest
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


def read_pages(keys: list[tuple[int, int]], limit: int = PAGE_SIZE) -> dict[tuple[int, int], Page]:
    """``read_page`` for many ``(user_id, after)`` at once: one query for the events of every user
    (at most ``limit + 1`` each), one for the counters of those with nothing newer. A user asked for
    from two different seqs in one call gets a query per extra seq (two sockets of one user that
    both found a hole at once)."""
    rounds: list[dict[int, int]] = []
    for user_id, after in keys:
        for afters in rounds:
            if user_id not in afters:
                afters[user_id] = after
                break
        else:
            rounds.append({user_id: after})
    pages: dict[tuple[int, int], Page] = {}
    for afters in rounds:
        rows: dict[int, list[Event]] = defaultdict(list)
        if len(afters) == 1:
            [(user_id, after)] = afters.items()
            rows[user_id] = _fetch(user_id, after, limit)
        else:
            wanted = reduce(or_, (Q(user_id=u, seq__gt=a) for u, a in afters.items()))
            # Filtering on a window function: Django wraps the query, so each user's rows stop at limit + 1.
            query = (Event.objects.filter(wanted)
                     .annotate(rank=Window(RowNumber(), partition_by=[F("user_id")], order_by=F("seq").asc()))
                     .filter(rank__lte=limit + 1).order_by("user_id", "seq"))
            for event in query:
                rows[event.user_id].append(event)
        empty = [u for u in afters if not rows[u]]
        newest = last_seqs(empty) if empty else {}
        for user_id, after in afters.items():
            pages[(user_id, after)] = _page(user_id, after, limit, rows[user_id], newest.get(user_id, 0))
    return pages


def last_seqs(user_ids: list[int]) -> dict[int, int]:
    """Each user's newest seq (absent: 0, nothing logged yet), one query."""
    return dict(EventCounter.objects.filter(user_id__in=user_ids).values_list("user_id", "last_seq"))


# Off the event loop, in the default thread pool, and batched: every connection reading at the same
# time (a reconnect storm, a mass gap fill after a Redis blip) shares one query per batch (batching.py).
_pages: Batcher[tuple[int, int], Page] = Batcher(read_pages, default=Page(), max_batch=200)
_last_seqs: Batcher[int, int] = Batcher(last_seqs, default=0)


async def aread_page(user_id: int, after: int, limit: int = PAGE_SIZE) -> Page:
    if limit != PAGE_SIZE:
        return await database_sync_to_async(read_page, thread_sensitive=False)(user_id, after, limit)
    return await _pages.load((user_id, after))


async def alast_seq(user_id: int) -> int:
    return await _last_seqs.load(user_id)
