"""What every peer's no-op task body calls, so all queues are timed the same way.

- Drain: ``ran()`` notes, in the worker process, the time of its first and latest task and
  how many it ran; a daemon thread writes that to one Redis hash per process every 10 ms
  (one round trip per flush, not per task, so the measure costs the queue nothing).
  The drain's rate is tasks / (latest end - first start) over all processes.
- Pick-up: ``picked_up()`` is the first line of the task's work: it pushes ``time.time()``
  onto a Redis list that the enqueuing process waits on (BLPOP), so the latency is
  enqueue call -> task's first line, on one clock.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import redis

PREFIX = "bench:peers"
_lock = threading.Lock()
_state = {"first": 0.0, "last": 0.0, "n": 0, "flushed": 0}
_flusher: threading.Thread | None = None
_client: redis.Redis | None = None


def client() -> redis.Redis:
    global _client
    if _client is None:
        # No socket timeout: redis-py 8's default (5 s) cut the first BLPOP short while a worker
        # was still starting (its imports take 10-30 s at a load of 9); each wait has its own timeout.
        _client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), socket_timeout=None)
    return _client


def reset() -> None:
    """Forget every process's figures (before a round)."""
    r = client()
    keys = list(r.scan_iter(f"{PREFIX}:*"))
    if keys:
        r.delete(*keys)


def ran() -> None:
    now = time.time()
    with _lock:
        if not _state["n"]:
            _state["first"] = now
            _start_flusher()
        _state["last"] = now
        _state["n"] += 1


def _start_flusher() -> None:
    global _flusher
    if _flusher is None:
        _flusher = threading.Thread(target=_flush_loop, name="bench-tally", daemon=True)
        _flusher.start()


def _flush_loop() -> None:
    key = f"{PREFIX}:proc:{os.getpid()}:{id(_state)}"
    while True:
        time.sleep(0.01)
        with _lock:
            if _state["n"] == _state["flushed"]:
                continue
            first, last, n = _state["first"], _state["last"], _state["n"]
            _state["flushed"] = n
        client().hset(key, mapping={"first": first, "last": last, "n": n})


def drain_figures() -> dict[str, float]:
    """Tasks run so far over every process, with the span from first start to latest end."""
    r = client()
    rows = [r.hgetall(k) for k in r.scan_iter(f"{PREFIX}:proc:*")]
    if not rows:
        return {"done": 0, "seconds": 0.0}
    first = min(float(row[b"first"]) for row in rows)
    last = max(float(row[b"last"]) for row in rows)
    return {"done": sum(int(row[b"n"]) for row in rows), "seconds": last - first}


def wait_drained(total: int, timeout: float = 600) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        figures = drain_figures()
        if figures["done"] >= total:
            figures["rate"] = figures["done"] / figures["seconds"] if figures["seconds"] else 0.0
            return figures
        if time.monotonic() > deadline:
            raise SystemExit(f"only {figures['done']} of {total} tasks ran within {timeout} s")
        time.sleep(0.05)


def picked_up() -> None:
    client().lpush(f"{PREFIX}:pickup", repr(time.time()))


def wait_picked_up(timeout: float = 10) -> float:
    got = client().blpop([f"{PREFIX}:pickup"], timeout=timeout)
    if got is None:
        raise SystemExit("a task was not picked up within the timeout")
    return float(got[1])


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def pickup_figures(latencies_ms: list[float]) -> dict[str, float]:
    import statistics

    return {"p50": statistics.median(latencies_ms), "p99": percentile(latencies_ms, 99), "n": len(latencies_ms),
            "latencies": latencies_ms}


def sample_pickups(enqueue: Callable[[], object], samples: int) -> dict[str, float]:
    """Pick-up as every peer is timed: one job to see the worker up, then ``samples`` jobs (after
    five warm-ups), each from the enqueue call to its first line, one at a time."""
    enqueue()
    wait_picked_up(timeout=60)
    time.sleep(0.5)  # let the worker settle into its idle wait
    latencies = []
    for i in range(samples + 5):
        start = time.time()
        enqueue()
        picked = wait_picked_up()
        if i >= 5:
            latencies.append((picked - start) * 1000)
        time.sleep(0.02)
    return pickup_figures(latencies)
