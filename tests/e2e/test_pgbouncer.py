"""Behind PgBouncer in transaction mode: a real pgbouncer (Debian's package) started by the
test, every process's DATABASE_URL through it, the wake-up listener on DATABASE_LISTEN_URL."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from django.db import connection

from generation.models import GenerationTask
from generation.retention import LOCK_KEY, retention_lock
from notifications.models import Event
from tests.conftest import accepts, free_port, product_photo, wait_until
from tests.notifications.support import token_for

pytestmark = pytest.mark.django_db(transaction=True)
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def direct_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def pooler() -> Iterator[str]:
    """A transaction-mode pgbouncer in front of the test database; yields its DATABASE_URL."""
    if connection.vendor != "postgresql" or not Path(PGBOUNCER).exists():
        pytest.skip("needs PostgreSQL and pgbouncer (apt-get install pgbouncer; .ci/run does)")
    db = connection.settings_dict
    port = free_port()
    # pgbouncer will not run as root: its files go where its own user can read and write them.
    workdir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    (workdir / "users.txt").write_text(f'"{db["USER"]}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 6\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    command = [PGBOUNCER, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        for path in workdir.iterdir():
            shutil.chown(path, "postgres")
        command = [PGBOUNCER, "-u", "postgres", str(workdir / "pgbouncer.ini")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: accepts(port) or proc.poll() is not None, timeout=20)
        log = workdir / "pgbouncer.log"
        assert proc.poll() is None, log.read_text() if log.exists() else "pgbouncer exited"
        yield f"postgres://{db['USER']}@127.0.0.1:{port}/{db['NAME']}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def listening(worker_count: int) -> bool:
    """True once ``worker_count`` sessions on the server LISTEN for work (the direct connections)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND query = 'LISTEN imagegen_tasks'")
        return cursor.fetchone()[0] >= worker_count


def test_behind_a_transaction_pooler_claims_fencing_events_and_wake_up_hold(
        cluster: Any, pooler: str, make_user: Any) -> None:
    via_pooler = {"DATABASE_URL": pooler, "DATABASE_LISTEN_URL": direct_url(),
                  # A poll this slow cannot be what picks a task up within seconds: NOTIFY must.
                  "IMAGEGEN_POLL_INTERVAL": "30"}
    port = cluster.daphne("web", **via_pooler)
    for name in ("worker-1", "worker-2"):
        cluster.worker(name, IMAGEGEN_BACKEND="tests.generation.backends.SlowBackend", TEST_BACKEND_SECONDS="0.2",
                       **via_pooler)
    wait_until(lambda: listening(2), timeout=60, interval=0.1)
    user = make_user()
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token_for(user)}"},
                       timeout=30)

    def submit() -> int:
        response = api.post("/api/tasks/", files={"image": ("p.jpg", product_photo(), "image/jpeg")})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    # Wake-up: submitted through the pooler, picked up at once by NOTIFY (the poll is 30 s).
    first = submit()
    submitted = time.monotonic()
    wait_until(lambda: GenerationTask.objects.get(pk=first).status != "pending", timeout=10, interval=0.01)
    assert time.monotonic() - submitted < 5

    # Claims: twenty tasks over two workers, each run exactly once.
    ids = [first, *(submit() for _ in range(19))]
    wait_until(lambda: GenerationTask.objects.filter(pk__in=ids, status="completed").count() == 20,
               timeout=90, interval=0.1)
    tasks = GenerationTask.objects.filter(pk__in=ids)
    assert set(tasks.values_list("attempts", flat=True)) == {1}
    assert len(set(tasks.values_list("worker__name", flat=True))) == 2

    # Fencing: a task canceled while it runs stays canceled; the worker's result is discarded.
    slow = GenerationTask.objects.filter(pk=submit())
    wait_until(lambda: slow.get().status == "processing", timeout=10, interval=0.01)
    assert api.post(f"/api/tasks/{slow.get().pk}/cancel/").status_code == 200
    wait_until(lambda: "discarded" in cluster.log("worker-1") + cluster.log("worker-2"), timeout=20)
    assert slow.get().status == "canceled" and not slow.get().result_image

    # Events: one gapless log, one task_complete per completed task.
    seqs = list(Event.objects.filter(user=user).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert Event.objects.filter(user=user, type="task_complete").count() == 20
    listed = api.get("/api/tasks/?status=completed").json()  # the REPEATABLE READ listing, pooled
    assert listed["count"] == 20 and listed["last_seq"] == seqs[-1]
    api.close()


def test_behind_a_pooler_the_retention_lock_lives_on_the_direct_session(settings: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    settings.DATABASE_LISTEN_URL = direct_url()

    def lock_free() -> bool:
        with psycopg.connect(direct_url(), autocommit=True) as other:
            taken = other.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]
            if taken:
                other.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
            return bool(taken)

    with retention_lock() as acquired:
        assert acquired
        assert not lock_free()  # held, by a session of its own
        with connection.cursor() as cursor:  # and not by the (pooled) default connection
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            assert cursor.fetchone()[0] == 0
    assert lock_free()  # released when that session closed
