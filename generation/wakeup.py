"""Waking idle workers the moment a task becomes claimable.

Two paths, both best-effort, so workers keep a slow safety poll:
- ``local``: a process-wide condition, notified after commit by the code that
  queued work in this process (the embedded worker in the web process, tests).
- PostgreSQL LISTEN/NOTIFY: ``GenerationTask`` issues ``pg_notify`` inside the
  transaction that queues work (delivered at commit); a ``Listener`` thread per
  worker process turns notifications into ``local.notify()``. NOTIFY is lost
  while nobody listens. Behind PgBouncer in transaction mode NOTIFY still passes
  (it is sent at commit) but LISTEN does not: ``DATABASE_LISTEN_URL`` gives the
  listener a direct connection.

``deadlines`` is the same kind of wake-up for the expiry sweepers only: notified when work
with an ``expires_at`` is queued (locally, or by a NOTIFY whose payload is ``DEADLINE``), so
the sweeper's read does not run beside every claim of a busy queue.
"""
from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

CHANNEL = "imagegen_tasks"
#: The NOTIFY payload of work that carries a deadline (an empty payload: work without one).
DEADLINE = "deadline"


class Wakeup:
    """A counter under a condition: a waiter returns as soon as the counter moved
    past the value it saw, so a notify between two waits is never missed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Block until notified after ``seen`` or ``timeout`` seconds. True if notified."""
        with self._cond:
            return self._cond.wait_for(lambda: self._generation != seen, timeout=timeout)


local = Wakeup()
deadlines = Wakeup()


class Listener(threading.Thread):
    """LISTENs on its own autocommit connection and relays notifications to ``local``."""

    def __init__(self, conninfo: dict, stop: threading.Event) -> None:
        super().__init__(name="imagegen-listen", daemon=True)
        self._conninfo = conninfo
        self._halt = stop
        self.ready = threading.Event()

    def run(self) -> None:
        import psycopg

        while not self._halt.is_set():
            try:
                with psycopg.connect(**self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.ready.set()
                    # A reconnect may have missed notifications: let waiters look.
                    local.notify()
                    deadlines.notify()
                    while not self._halt.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=1):
                            local.notify()
                            if note.payload == DEADLINE:
                                deadlines.notify()
            except Exception:  # the safety poll covers us while we reconnect
                logger.exception("LISTEN connection failed; retrying in 1 s")
                self._halt.wait(1.0)


def postgres_conninfo() -> dict | None:
    """psycopg connection kwargs for the LISTEN connection, or None when the database is not
    PostgreSQL. ``DATABASE_LISTEN_URL`` (a direct connection beside a transaction-mode
    pooler, which cannot LISTEN) wins over the default database's own parameters."""
    from django.conf import settings
    from django.db import connections

    if settings.DATABASE_LISTEN_URL:
        return {"conninfo": settings.DATABASE_LISTEN_URL}
    conn = connections["default"]
    if conn.vendor != "postgresql":
        return None
    params = dict(conn.get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold", "server_side_binding"):
        params.pop(key, None)
    return params
