"""The soak, small: every fault of the full soak (bench/soak.py) in about two minutes, with the same checks.

Two daphne processes behind a TCP proxy, two workers, its own Redis and database, clients that track every
seq. Faults: Redis restarted, a daphne restarted, a worker killed with -9, the proxy cutting every
connection; tokens expire throughout and are refreshed in band. Nothing may be lost or duplicated, and
no connection may drop except at an injected cut.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

ROOT = Path(django_settings.BASE_DIR)
CLIENTS = 100


@pytest.fixture
def postgres_base(db: object) -> str:
    if connection.vendor != "postgresql":
        pytest.skip("the soak needs PostgreSQL (DATABASE_URL=postgres://...)")
    if shutil.which("redis-server") is None:
        pytest.skip("the soak starts its own Redis: install the redis-server package")
    params = connection.settings_dict
    return f"postgres://{params['USER']}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}"


@pytest.mark.timeout(600)
def test_a_short_soak_with_every_fault_loses_and_duplicates_nothing(postgres_base: str, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    env = {**os.environ, "BENCH_PG": postgres_base}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "bench/soak.py", "--clients", str(CLIENTS), "--seconds", "75", "--rate", "3",
         "--token-seconds", "20", "--sample-seconds", "2", "--no-report", "--json", str(out),
         "--logs", str(tmp_path / "logs")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())
    summary = {k: v for k, v in r.items() if k not in ("samples", "latency_windows")}

    assert [name for _, name in r["faults"]] == ["redis_restart", "daphne_restart", "worker_kill9", "proxy_cut"]
    # Every submitted task finished, none twice (the producer retries with the same Idempotency-Key).
    assert r["settled"] and r["tasks"] == {"completed": r["submitted"]}, summary
    # Every client got every event of its user's log exactly once.
    assert (r["lost"], r["duplicated"]) == (0, 0), summary
    assert r["events"] >= 3 * r["submitted"] > 0, summary
    # Tokens lived 20 s over a run of 75: each was refreshed in band, none closed a socket.
    assert r["closes_token_expiry"] == 0 and r["refresh_errors"] == 0, summary
    assert r["refreshed"] >= 2 * CLIENTS, summary
    # Connections dropped only at the injected cuts (a daphne restart, the proxy's cut).
    assert r["reconnects"] - r["reconnects_injected"] <= CLIENTS // 50, summary
    assert r["reconnects_injected"] >= CLIENTS, summary  # the proxy's cut reached every client
    # The storms after the daphne restart and the proxy's cut: handshakes are answered, not timed out
    # (the seed rolls back under 95 % connection success).
    assert r["connection_success"] >= 0.95, summary
