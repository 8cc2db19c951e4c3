"""The fleet-wide rate limit in front of an upstream API (``IMAGEGEN_GEMINI_RPM``).

One row per upstream, in the database every worker machine already shares (it
works the same on the embedded SQLite default; Redis is only the fast path of
events here, and a limiter must not fail open the way the cache does). Each
decision is one short transaction holding that row's lock, taken once per
upstream call (a call itself takes seconds), so the row is never hot.

The guarantee is a sliding window log: a call is allowed only while fewer than
``per_window`` calls were in flight or ended in the last ``window`` seconds (plus a small
margin, so that network jitter between the limiter and the upstream cannot put
one call more into a window as the upstream counts it), and never while a 429
pause holds. A caller that is refused gets the time a slot is expected for it:
the log and the wake-up times already handed out are both counted, so eight
waiting tasks are told four different honest times rather than all the same
one. Those times only schedule retries; the log alone decides.

Times are the database server's clock on PostgreSQL (one clock for the fleet),
the local clock on SQLite (one machine).
"""
from __future__ import annotations

import time

from django.db import connection, models, transaction

#: A slot frees this long after the window, for the jitter between decision and arrival.
MARGIN_SECONDS = 0.25
#: Wake-up times this close are taken as arrived (clocks of two machines differ a little).
ARRIVED_SLACK = 0.5


def db_clock() -> float:
    """Seconds since the epoch on the database's clock (the shared one) or, on SQLite, this machine's."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())")
            return float(cursor.fetchone()[0])
    return time.time()


class UpstreamLimit(models.Model):
    """Not task state: plain saves under the row lock, no events."""

    name = models.CharField(primary_key=True, max_length=50)
    #: Epoch seconds of the calls allowed within the last window, oldest first.
    calls = models.JSONField(default=list)
    #: Epoch seconds handed to refused callers as their expected slot, still ahead.
    waiters = models.JSONField(default=list)
    #: No call before this (epoch seconds): the upstream's own 429 asked the fleet to wait.
    paused_until = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"upstream limit {self.name}"

    @classmethod
    def _locked(cls, name: str) -> UpstreamLimit:
        cls.objects.get_or_create(name=name)
        return cls.objects.select_for_update().get(name=name)

    def _prune(self, now: float, window: float) -> None:
        self.calls = [c for c in self.calls if c + window + MARGIN_SECONDS > now]
        self.waiters = [w for w in self.waiters if w > now + ARRIVED_SLACK]

    def _next_slot(self, now: float, per_window: int | None, window: float) -> float:
        """When a slot is expected for one more caller, counting the callers already told
        a time; that time is then handed out too."""
        slot = max(now, self.paused_until)
        if per_window:
            ahead = sorted([*self.calls, *self.waiters])
            if len(ahead) >= per_window:
                slot = max(slot, ahead[-per_window] + window + MARGIN_SECONDS)
        self.waiters.append(slot)
        return slot

    @classmethod
    def acquire(cls, name: str, per_window: int | None, window: float) -> tuple[float, float | None]:
        """Ask for one call now. Returns ``(0.0, stamp)`` when it may go (it is counted from
        now; hand ``stamp`` to ``finish`` once the call has ended), otherwise ``(seconds, None)``:
        the seconds until a slot is expected for this caller. ``per_window`` None: no rate,
        only a 429 pause can hold the call back."""
        with transaction.atomic():
            row = cls._locked(name)
            now = db_clock()
            row._prune(now, window)
            if row.paused_until <= now and (not per_window or len(row.calls) < per_window):
                row.calls.append(now)
                row.save(update_fields=["calls", "waiters"])
                return 0.0, now
            wait = row._next_slot(now, per_window, window) - now
            row.save(update_fields=["calls", "waiters"])
            return max(wait, 0.01), None

    @classmethod
    def finish(cls, name: str, stamp: float) -> None:
        """The call admitted at ``stamp`` has ended: it holds its slot for a window from now.
        The upstream counts a request when it arrives, somewhere between the two; a slow
        first request (a cold client) would otherwise let the next window's calls arrive
        within one window of it. A call whose worker died keeps its admission time."""
        with transaction.atomic():
            row = cls._locked(name)
            if stamp in row.calls:
                row.calls.remove(stamp)
            # Back in even if a call longer than the window was pruned meanwhile.
            row.calls = sorted([*row.calls, db_clock()])
            row.save(update_fields=["calls"])

    @classmethod
    def pause(cls, name: str, seconds: float, per_window: int | None, window: float) -> float:
        """Hold every caller back for ``seconds`` (the upstream's 429 said so). Returns the
        seconds the reporting caller itself waits (its slot after the pause)."""
        with transaction.atomic():
            row = cls._locked(name)
            now = db_clock()
            row._prune(now, window)
            row.paused_until = max(row.paused_until, now + seconds)
            wait = row._next_slot(now, per_window, window) - now
            row.save(update_fields=["calls", "waiters", "paused_until"])
            return max(wait, 0.01)
