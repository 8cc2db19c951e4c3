"""The original system's monitoring table, live: each figure beside its target and its rollback trigger.

The analysis that started this project ends with what must hold in production (WebSocket connection success
> 99 %, push latency p50 < 100 ms and p99 < 500 ms, message loss < 0.1 %, < 5 reconnects per user per hour,
server CPU < 50 %, < 1 MB per connection) and when to roll back (success < 95 %, p99 > 5 s). Here each web
process measures those figures over a sliding window (``WINDOW``) from what it already counts:

- connection success: accepted connects over all attempts, except those refused for the client's own
  credentials or Origin (a wrong token is not the server failing); rate limits and outages count as failures;
- push latency: the exact p50/p99 of the window's pushes (commit -> frame sent), beside the histogram;
- gap fills and replays: the loss detector (an event that overtook a lost one, a resume that replayed);
- reconnects per connected user-hour: a connect is a reconnect when the same user's socket closed anywhere in
  the fleet less than ``RECONNECT_SECONDS`` before; connected user-hours integrate the distinct users with a
  socket in this process;
- process CPU (share of one core) and memory per open connection (resident memory above what the process
  held before its first socket, over the open sockets).

Each process publishes its window to the cache next to its socket counts (``presence``), so any process can
show the fleet: sums of numerators over sums of denominators, the worst process's latency percentiles.
"""
from __future__ import annotations

import os
import resource
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

WINDOW = 600.0  # seconds
RECONNECT_SECONDS = 60.0
LATENCY_SAMPLES = 2000  # the window's most recent pushes, per process
# Connect outcomes that count as attempts: all but a refusal of the client's own token or Origin.
SERVER_OUTCOMES = ("accepted", "rate_limited", "too_many_sockets", "unavailable")

RECONNECTS = Counter("imagegen_websocket_reconnects_total",
                     f"Connects of a user whose socket closed less than {RECONNECT_SECONDS:g} s before (fleet-wide)")
USER_SECONDS = Counter("imagegen_websocket_connected_user_seconds_total",
                       "Seconds of distinct users holding a socket in this process, integrated")


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    target: float
    rollback: float | None
    higher_is_better: bool

    def judge(self, value: float | None) -> str:
        """``ok``, ``missed`` (target not met) or ``rollback`` (the seed's trigger crossed), ``unknown``."""
        if value is None:
            return "unknown"
        def beyond(limit: float) -> bool:
            return value < limit if self.higher_is_better else value > limit
        if self.rollback is not None and beyond(self.rollback):
            return "rollback"
        return "missed" if beyond(self.target) or value == self.target else "ok"


FIGURES = (
    Figure("connection_success", "WebSocket connection success", "ratio", 0.99, 0.95, True),
    Figure("push_p50_seconds", "Push latency p50 (commit -> frame sent)", "s", 0.100, None, False),
    Figure("push_p99_seconds", "Push latency p99", "s", 0.500, 5.0, False),
    Figure("reconnects_per_user_hour", "Reconnects per connected user-hour", "/user-hour", 5.0, None, False),
    Figure("cpu_share", "Process CPU (share of one core)", "ratio", 0.50, None, False),
    Figure("memory_per_connection_bytes", "Memory per open connection", "bytes", 1024 * 1024, None, False),
)


def _count(metric: Any) -> float:
    # Our own series, read in process (a registry-wide collect per reading would walk every metric).
    return float(metric._value.get())  # noqa: SLF001


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ProcessWindow:
    """This process's figures over the last ``WINDOW`` seconds (cumulative readings, differenced)."""

    def __init__(self) -> None:
        self.readings: deque[tuple[float, dict[str, float]]] = deque()
        self.latencies: deque[tuple[float, float]] = deque(maxlen=LATENCY_SAMPLES)
        self.baseline_rss: int | None = None
        self.users = 0
        self._users_since = time.monotonic()

    # --- fed by the consumer and presence (on the event loop) ---------------------------------
    def push_latency(self, seconds: float) -> None:
        self.latencies.append((time.monotonic(), seconds))

    def users_changed(self, users: int) -> None:
        """The number of distinct users with a socket here changed: integrate the time at the old count."""
        now = time.monotonic()
        if self.baseline_rss is None:
            self.baseline_rss = _rss_bytes()  # before the first socket's memory
        USER_SECONDS.inc(self.users * (now - self._users_since))
        self.users, self._users_since = users, now

    # --- readings ---------------------------------------------------------------------------
    def reading(self) -> dict[str, float]:
        from .metrics import GAP_FILLS, WS_CONNECTS, WS_RESUMES

        self.users_changed(self.users)  # bring the integral up to now
        return {
            "attempts": sum(_count(WS_CONNECTS.labels(r)) for r in SERVER_OUTCOMES),
            "accepted": _count(WS_CONNECTS.labels("accepted")),
            "reconnects": _count(RECONNECTS),
            "user_seconds": _count(USER_SECONDS),
            "gap_fills": _count(GAP_FILLS),
            "replays": _count(WS_RESUMES),
            "cpu_seconds": time.process_time(),
        }

    def tick(self) -> dict[str, Any]:
        """Take a reading, drop what fell out of the window, return the window (what the cache gets)."""
        now = time.monotonic()
        reading = (now, self.reading())
        # presence flushes once per burst of connects, hundreds of times in a storm; a window's start
        # needs no finer grain than a second, so a reading within a second of the one before the
        # newest replaces the newest (at most two a second are kept, not one per flush for 10 min).
        if len(self.readings) > 1 and now - self.readings[-2][0] < 1.0:
            self.readings[-1] = reading
        else:
            self.readings.append(reading)
        while len(self.readings) > 2 and now - self.readings[1][0] >= WINDOW:
            self.readings.popleft()
        return self.window()

    def window(self) -> dict[str, Any]:
        now = time.monotonic()
        current = self.reading()
        start_at, start = self.readings[0] if self.readings else (now, current)
        delta = {k: current[k] - start.get(k, 0.0) for k in current}
        from .metrics import WS_CONNECTIONS

        sockets = int(_count(WS_CONNECTIONS))
        recent = [s for at, s in self.latencies if now - at <= WINDOW]
        rss = _rss_bytes()
        return {
            "seconds": max(now - start_at, 0.0), **delta, "latencies": recent[-500:],
            "sockets": sockets, "rss_bytes": rss, "grown_bytes": max(rss - (self.baseline_rss or rss), 0),
            "pid": os.getpid(),
        }


def figures(windows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The table's values over one or more processes' windows."""
    def ratio(num: float, den: float, scale: float = 1.0) -> float | None:
        return num / den * scale if den > 0 else None

    attempts = sum(w["attempts"] for w in windows)
    latencies = sorted(s for w in windows for s in w["latencies"])

    def pct(p: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

    sockets = sum(w["sockets"] for w in windows)
    busiest_cpu = max((ratio(w["cpu_seconds"], w["seconds"]) or 0.0 for w in windows), default=None)
    return {
        "connection_success": ratio(sum(w["accepted"] for w in windows), attempts),
        "push_p50_seconds": pct(0.50),
        "push_p99_seconds": pct(0.99),
        "reconnects_per_user_hour": ratio(sum(w["reconnects"] for w in windows),
                                          sum(w["user_seconds"] for w in windows), 3600.0),
        "cpu_share": busiest_cpu if windows else None,
        "memory_per_connection_bytes": ratio(sum(w["grown_bytes"] for w in windows), sockets),
        "gap_fills": sum(w["gap_fills"] for w in windows),
        "replays": sum(w["replays"] for w in windows),
        "processes": len(windows),
        "sockets": sockets,
    }


def shown(unit: str, value: float | None) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.1%}"
    if unit == "s":
        return f"{value * 1000:.1f} ms"
    if unit == "bytes":
        return f"{value / 1024:.0f} KiB"
    return f"{value:.2f}"


def table(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows for the admin dashboard: figure, value, target, trigger, verdict."""
    values = figures(windows)
    rows = []
    for f in FIGURES:
        sign = ">" if f.higher_is_better else "<"
        rows.append({
            "key": f.key, "label": f.label, "unit": f.unit, "value": values[f.key], "shown": shown(f.unit, values[f.key]),
            "target": f"{sign} {shown(f.unit, f.target)}",
            "rollback": f"{'<' if f.higher_is_better else '>'} {shown(f.unit, f.rollback)}" if f.rollback else "-",
            "verdict": f.judge(values[f.key]),
        })
    return {"rows": rows, "gap_fills": values["gap_fills"], "replays": values["replays"],
            "processes": values["processes"], "sockets": values["sockets"], "window_seconds": WINDOW}


process_window = ProcessWindow()


def _gauge(key: str, help_text: str) -> None:
    gauge = Gauge(f"imagegen_seed_{key}", f"{help_text}, this process, over the last {WINDOW:g} s")

    def read() -> float:
        value = figures([process_window.window()])[key]
        return float("nan") if value is None else float(value)

    gauge.set_function(read)


for _figure in FIGURES:
    _gauge(_figure.key, _figure.label)
