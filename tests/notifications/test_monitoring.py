"""The seed's monitoring table: figures measured from real sockets, in /metrics and on the admin dashboard."""
from __future__ import annotations

import html
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse

from notifications import monitoring
from notifications.metrics import WS_CONNECTS
from notifications.monitoring import FIGURES, RECONNECTS, figures, table

from .support import close_code, open_socket, read_events, read_until_sync, token_for

pytestmark = pytest.mark.django_db(transaction=True)

FIGURE = {f.key: f for f in FIGURES}


def window(**values: Any) -> dict[str, Any]:
    base = {"seconds": 600.0, "attempts": 0.0, "accepted": 0.0, "reconnects": 0.0, "user_seconds": 0.0,
            "gap_fills": 0.0, "replays": 0.0, "cpu_seconds": 0.0, "latencies": [], "sockets": 0,
            "rss_bytes": 0, "grown_bytes": 0, "pid": 1}
    return {**base, **values}


@pytest.mark.parametrize(("key", "value", "verdict"), [
    ("connection_success", 0.999, "ok"), ("connection_success", 0.97, "missed"),
    ("connection_success", 0.90, "rollback"), ("push_p99_seconds", 0.2, "ok"),
    ("push_p99_seconds", 0.8, "missed"), ("push_p99_seconds", 6.0, "rollback"),
    ("push_p50_seconds", 0.1, "missed"), ("reconnects_per_user_hour", None, "unknown"),
])
def test_each_figure_is_judged_against_the_seed_target_and_rollback_trigger(key: str, value: float | None,
                                                                           verdict: str) -> None:
    assert FIGURE[key].judge(value) == verdict


def test_the_fleet_figures_sum_numerators_and_denominators_over_processes() -> None:
    a = window(attempts=100, accepted=99, reconnects=2, user_seconds=3600, latencies=[0.01] * 98 + [0.2, 0.3],
               sockets=10, grown_bytes=10 * 40_000, cpu_seconds=60)
    b = window(attempts=100, accepted=91, reconnects=8, user_seconds=3600, latencies=[0.02] * 100,
               sockets=30, grown_bytes=30 * 40_000, cpu_seconds=420)
    got = figures([a, b])
    assert got["connection_success"] == pytest.approx(190 / 200)
    assert got["reconnects_per_user_hour"] == pytest.approx(5.0)  # 10 over 2 user-hours
    assert got["push_p50_seconds"] == pytest.approx(0.02) and got["push_p99_seconds"] == pytest.approx(0.2)
    assert got["memory_per_connection_bytes"] == pytest.approx(40_000)
    assert got["cpu_share"] == pytest.approx(0.7)  # the busiest process
    rows = {r["key"]: r for r in table([a, b])["rows"]}
    assert rows["connection_success"]["verdict"] == "missed" and rows["connection_success"]["shown"] == "95.0%"
    assert rows["cpu_share"]["verdict"] == "missed" and rows["push_p99_seconds"]["verdict"] == "ok"


async def test_real_sockets_feed_the_figures_reconnects_latency_and_success(user: Any, make_task: Any) -> None:
    started = time.monotonic()
    before = monitoring.process_window.reading()
    reconnects = RECONNECTS._value.get()
    refused = WS_CONNECTS.labels("unauthorized")._value.get()

    ws = await open_socket(token_for(user), after=0)
    await read_until_sync(ws)
    await sync_to_async(make_task)()
    await read_events(ws, 1)
    await ws.disconnect()
    again = await open_socket(token_for(user), after=0)  # the same user, right after: a reconnect
    await read_until_sync(again)
    await again.disconnect()
    bad = await open_socket("not-a-token")  # the client's own fault: not a failed connection
    assert await close_code(bad) == 4001

    assert RECONNECTS._value.get() == reconnects + 1
    assert WS_CONNECTS.labels("unauthorized")._value.get() == refused + 1
    after = monitoring.process_window.reading()
    assert after["accepted"] - before["accepted"] == 2 and after["attempts"] - before["attempts"] == 2
    # The task_created push was measured (commit -> frame sent).
    assert monitoring.process_window.latencies[-1][0] >= started
    assert after["user_seconds"] > before["user_seconds"]


def test_metrics_and_the_admin_dashboard_show_the_table(admin_client: Any, settings: Any) -> None:
    settings.METRICS_PUBLIC = True
    for _ in range(20):  # more than 1 % of the window's samples past the seed's p99 trigger (5 s)
        monitoring.process_window.push_latency(7.5)
    text = admin_client.get("/metrics").content.decode()
    for figure in FIGURES:
        assert f"imagegen_seed_{figure.key} " in text
    assert "imagegen_websocket_reconnects_total" in text and "imagegen_gap_fills_total" in text

    page = admin_client.get(reverse("admin:generation_dashboard")).content.decode()
    assert "The seed&#x27;s monitoring table" in page or "The seed's monitoring table" in page
    assert 'class="seed-rollback" data-key="push_p99_seconds"' in page
    for figure in FIGURES:
        assert html.escape(figure.label) in page



def test_a_storm_of_flushes_keeps_about_one_reading_a_second_and_the_window_still_moves(monkeypatch: Any) -> None:
    """presence ticks once per flush, i.e. once per burst of connects: a storm must not keep a reading
    per flush for the whole window (measured: about 100 bytes per socket after 1,000 connects)."""
    clock = [1000.0]
    monkeypatch.setattr(monitoring.time, "monotonic", lambda: clock[0])
    process = monitoring.ProcessWindow()
    for i in range(1000):  # 10 s of a storm: 100 flushes a second
        clock[0] = 1000.0 + i / 100
        process.tick()
    assert len(process.readings) <= 12
    assert process.readings[0][0] == 1000.0  # the window starts where it started
    assert process.readings[-1][0] == clock[0]  # and ends at the latest reading
    clock[0] = 1000.0 + monitoring.WINDOW + 20
    process.tick()
    assert 1000.0 + 9 < process.readings[0][0] < 1000.0 + 10  # the oldest readings left the window
