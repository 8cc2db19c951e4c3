"""A bare PostgreSQL queue: the floor a database queue starts from.

One table; a worker locks the next queued row with ``FOR UPDATE SKIP LOCKED``, runs the
task and marks it done in that same transaction (one commit per task), and sleeps on
LISTEN/NOTIFY (1 s safety poll) when the queue is empty. No events, no fencing, no retries.
"""
from __future__ import annotations

import os
import sys

import psycopg

from bench.peers import common, tally

DB = os.environ.get("BENCH_PEER_DB", "bench_peer_bare")
CHANNEL = "bench_bare"


def url() -> str:
    return f"{common.PG}/{DB}"


def setup() -> None:
    common.recreate_database(DB)
    with psycopg.connect(url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE job (id bigserial PRIMARY KEY, pickup boolean NOT NULL DEFAULT false, "
                     "status text NOT NULL DEFAULT 'queued')")
        conn.execute("CREATE INDEX job_queued ON job (id) WHERE status = 'queued'")


def work() -> None:
    """The worker process: claim-run-commit until terminated."""
    with psycopg.connect(url(), autocommit=True) as listen, psycopg.connect(url()) as conn:
        listen.execute(f"LISTEN {CHANNEL}")
        while True:
            with conn.transaction():
                row = conn.execute(
                    "SELECT id, pickup FROM job WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
                ).fetchone()
                if row is not None:
                    tally.picked_up() if row[1] else tally.ran()
                    conn.execute("UPDATE job SET status = 'done' WHERE id = %s", [row[0]])
            if row is None:
                for _ in listen.notifies(timeout=1.0, stop_after=1):
                    pass


def enqueue(conn: psycopg.Connection, pickup: bool = False) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO job (pickup) VALUES (%s)", [pickup])
        conn.execute(f"NOTIFY {CHANNEL}")


def _workers(count: int) -> list:
    return common.spawn([sys.executable, "-m", "bench.peers.bare_peer", "work"], count, BENCH_PEER_DB=DB)


def drain(tasks: int, processes: int) -> dict:
    setup()
    tally.reset()
    with psycopg.connect(url(), autocommit=True) as conn:
        conn.execute("INSERT INTO job (pickup) SELECT false FROM generate_series(1, %s)", [tasks])
    return common.while_running(_workers(processes), lambda: tally.wait_drained(tasks))


def pickup(samples: int) -> dict:
    setup()
    tally.reset()

    def measure() -> dict:
        with psycopg.connect(url(), autocommit=True) as conn:
            return tally.sample_pickups(lambda: enqueue(conn, pickup=True), samples)

    return common.while_running(_workers(1), measure)


if __name__ == "__main__":
    if sys.argv[1:] == ["work"]:
        work()
    else:
        common.main(drain=drain, pickup=pickup)
