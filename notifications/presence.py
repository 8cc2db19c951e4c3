"""Open WebSocket connections: exact in each process, summed across processes via the cache.

Each server process counts its own sockets (per user and in total) on its
event loop, and mirrors the counts to cache keys of its own with a short TTL,
refreshed by a background task. Nobody else writes those keys, so there is no
read-modify-write race on the counts, and a crashed process's sockets vanish
from the totals when its keys expire (``TTL``). A small registry key lists the
processes so a reader knows which keys to sum.

``open_connections()`` is what ``/api/queue/stats/`` reports; ``try_open``
enforces ``IMAGEGEN_WS_MAX_SOCKETS_PER_USER`` across processes (two processes
admitting the same user at the same instant may both see room: a soft cap).
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter

from asgiref.sync import sync_to_async

from imagegen_site.cache import process_cache

from .metrics import WS_CONNECTIONS
from .monitoring import RECONNECT_SECONDS, RECONNECTS, process_window

logger = logging.getLogger(__name__)

PREFIX = "imagegen:ws"
REGISTRY_KEY = f"{PREFIX}:procs"
LOCK_KEY = f"{PREFIX}:procs:lock"
TTL = 60  # seconds a process's counts outlive its last refresh
REFRESH = 15
REGISTRY_CACHE_SECONDS = 5.0


def user_key(user_id: int, process: str) -> str:
    return f"{PREFIX}:user:{user_id}:{process}"


def total_key(process: str) -> str:
    return f"{PREFIX}:total:{process}"


def closed_key(user_id: int) -> str:
    """When this user's last socket closed, in any process: a connect soon after is a reconnect."""
    return f"{PREFIX}:closed:{user_id}"


def window_key(process: str) -> str:
    return f"{PREFIX}:window:{process}"


class Presence:
    def __init__(self) -> None:
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.by_user: Counter[int] = Counter()
        self.total = 0
        self._dirty: set[int] = set()
        self._closed: dict[int, float] = {}  # users whose socket closed since the last flush -> when
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task | None = None
        self._flusher_loop: asyncio.AbstractEventLoop | None = None
        self._registry: tuple[float, list[str]] = (0.0, [])

    # --- on the event loop ---------------------------------------------------------------
    async def try_open(self, user_id: int, cap: int) -> bool:
        """Count a new socket of ``user_id`` unless the user already has ``cap`` open."""
        others, closed_at = await sync_to_async(self._others_for, thread_sensitive=False)(user_id)
        return self.open_counted(user_id, cap, others, closed_at)

    def open_counted(self, user_id: int, cap: int, others: int, closed_at: float | None) -> bool:
        """``try_open`` once the cache was read (``others``: the user's sockets in other processes,
        ``closed_at``: when the user's last socket closed anywhere), e.g. in one batch for many connects."""
        # Read our own count only now: connects of this user that finished while
        # we were reading the cache are included.
        if others + self.by_user[user_id] >= cap:
            return False
        closed_at = self._closed.get(user_id, closed_at)
        if closed_at is not None and time.time() - closed_at < RECONNECT_SECONDS:
            RECONNECTS.inc()
        self.by_user[user_id] += 1
        self.total += 1
        WS_CONNECTIONS.inc()
        process_window.users_changed(len(self.by_user))
        self._changed(user_id)
        return True

    def close(self, user_id: int) -> None:
        if self.by_user[user_id] <= 1:
            self.by_user.pop(user_id, None)
        else:
            self.by_user[user_id] -= 1
        self.total -= 1
        WS_CONNECTIONS.dec()
        self._closed[user_id] = time.time()
        process_window.users_changed(len(self.by_user))
        self._changed(user_id)

    def _changed(self, user_id: int) -> None:
        self._dirty.add(user_id)
        loop = asyncio.get_running_loop()
        if self._flusher is None or self._flusher.done() or self._flusher_loop is not loop:
            self._wake = asyncio.Event()
            self._flusher_loop = loop
            self._flusher = loop.create_task(self._flush_forever(self._wake))
        assert self._wake is not None
        self._wake.set()

    async def _flush_forever(self, wake: asyncio.Event) -> None:
        """One writer per process: bursts of connects coalesce into one cache write."""
        register = True
        while True:
            dirty, self._dirty = self._dirty, set()
            closed, self._closed = self._closed, {}
            counts = {uid: self.by_user.get(uid, 0) for uid in dirty}
            try:
                await sync_to_async(self._write, thread_sensitive=False)(counts, self.total, register, closed,
                                                                         process_window.tick())
            except Exception:
                logger.exception("Could not publish connection counts")
            if not self.by_user and not self._dirty and not self._closed:
                # No socket left and its zero written: nothing to refresh, so end here (the next
                # connect starts a new writer) rather than idle on a loop that may be closing.
                return
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that races the wake-up, and this loop would never end.
                async with asyncio.timeout(REFRESH):
                    await wake.wait()
                register = False
            except TimeoutError:
                self._dirty.update(self.by_user)  # refresh the TTLs of every live count
                register = True
            wake.clear()

    # --- in worker threads ----------------------------------------------------------------
    def _write(self, counts: dict[int, int], total: int, register: bool, closed: dict[int, float],
               window: dict) -> None:
        values: dict[str, object] = {user_key(uid, self.process): n for uid, n in counts.items()}
        values[total_key(self.process)] = total
        values[window_key(self.process)] = window  # the seed's figures of this process (monitoring)
        values.update({closed_key(uid): at for uid, at in closed.items()})
        process_cache().set_many(values, TTL)  # one backend for the process, not one per socket
        if register:
            self._register()

    def _register(self) -> None:
        """Add this process to the registry (a read-modify-write, so under a short lock:
        processes that start together would otherwise overwrite each other's entry)."""
        cache = process_cache()
        for _ in range(20):
            if cache.add(LOCK_KEY, self.process, 5):
                break
            time.sleep(random.uniform(0.005, 0.02))
        else:
            logger.warning("Connection registry lock not acquired; registering without it")
        try:
            now = time.time()
            registry = cache.get(REGISTRY_KEY) or {}
            registry = {p: seen for p, seen in registry.items() if now - seen < 4 * TTL}
            registry[self.process] = now
            cache.set(REGISTRY_KEY, registry, None)
        finally:
            cache.delete(LOCK_KEY)

    def _other_processes(self) -> list[str]:
        fetched_at, processes = self._registry
        if time.monotonic() - fetched_at > REGISTRY_CACHE_SECONDS:
            processes = [p for p in (process_cache().get(REGISTRY_KEY) or {}) if p != self.process]
            self._registry = (time.monotonic(), processes)
        return processes

    def _others_for(self, user_id: int) -> tuple[int, float | None]:
        """The user's sockets in other processes, and when the user's socket last closed (one cache read)."""
        try:
            return self.others_from(user_id, process_cache().get_many(self.keys_for(user_id)))
        except Exception as exc:
            logger.warning("Socket cap not checked across processes (%s)", exc)
            return 0, None

    def keys_for(self, user_id: int) -> list[str]:
        """The cache keys ``_others_for`` reads (callers that batch many users read them together)."""
        return [*(user_key(user_id, p) for p in self._other_processes()), closed_key(user_id)]

    def others_from(self, user_id: int, found: dict) -> tuple[int, float | None]:
        """``_others_for`` from values read under ``keys_for(user_id)`` (absent keys: missing)."""
        closed_at = found.get(closed_key(user_id))
        counts = (found.get(user_key(user_id, p)) for p in self._other_processes())
        return sum(int(n) for n in counts if n is not None), closed_at

    def windows(self) -> list[dict]:
        """The seed's figures of every web process (this one read now, the others as last published)."""
        own = process_window.window()
        try:
            processes = [p for p in (process_cache().get(REGISTRY_KEY) or {}) if p != self.process]
            others = process_cache().get_many([window_key(p) for p in processes]) if processes else {}
        except Exception as exc:
            logger.warning("Figures of other processes unavailable (%s)", exc)
            others = {}
        return [own, *others.values()]

    def open_connections(self) -> int:
        """Open sockets in all server processes (this one counted exactly)."""
        cache = process_cache()
        try:
            processes = [p for p in (cache.get(REGISTRY_KEY) or {}) if p != self.process]
            others = cache.get_many([total_key(p) for p in processes]) if processes else {}
            return self.total + sum(int(n) for n in others.values())
        except Exception as exc:
            logger.warning("Connection counts of other processes unavailable (%s)", exc)
            return self.total


presence = Presence()


def open_connections() -> int:
    """Open WebSocket connections across all server processes (for ``/api/queue/stats/``)."""
    return presence.open_connections()


def seed_table() -> dict:
    """The seed's monitoring table over every web process (for the admin dashboard)."""
    from .monitoring import table

    return table(presence.windows())
