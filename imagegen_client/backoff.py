"""How long to wait before trying the server again."""
from __future__ import annotations

import os
import random
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable

#: A server asking for more than this (a misconfigured proxy, a typo) is not
#: taken at its word: the stream would otherwise stand still for hours.
MAX_RETRY_AFTER_SECONDS = 300.0


class Backoff:
    """Exponential backoff with full jitter: sleep ``U(0, min(cap, base * 2**n))``.

    Full jitter spreads a herd of clients reconnecting after a server restart
    far better than a fixed delay plus a little noise. The attempt count resets
    only once a connection has stayed up ``stable_after`` seconds, so a server
    that accepts and at once drops us is still backed off.

    Each backoff draws from a generator of its own, seeded from the client:
    ``seed`` (anything ``random.Random`` takes, e.g. a client id, for a
    reproducible spread) or else the OS's randomness. A shared or fixed-seeded
    generator would give clients started together the same delays, and they
    would come back in lockstep. ``rng`` replaces the generator (tests).
    """

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        stable_after: float = 60.0,
        rng: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: Any = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.stable_after = stable_after
        self.attempts = 0
        self._rng = rng or random.Random(seed if seed is not None else os.urandom(16)).random
        self._clock = clock
        self._opened_at: float | None = None

    def next_delay(self, at_least: float = 0.0) -> float:
        """The next wait; never shorter than ``at_least`` (a server's ``Retry-After``)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempts, 30))
        self.attempts += 1
        return max(self._rng() * ceiling, at_least)

    def opened(self) -> None:
        self._opened_at = self._clock()

    def closed(self) -> None:
        if self._opened_at is not None and self._clock() - self._opened_at >= self.stable_after:
            self.attempts = 0
        self._opened_at = None

    def succeeded(self) -> None:
        """A request went through: the next failure starts from the shortest wait again."""
        self.attempts = 0


def retry_after(value: str | None, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> float:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); 0 if absent or unreadable."""
    if not value:
        return 0.0
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - now()).total_seconds()
    if seconds != seconds:  # NaN
        return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
