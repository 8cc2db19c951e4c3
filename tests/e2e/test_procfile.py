"""The Procfile, started by honcho as docs/deploy.md does on one machine."""
from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from generation.models import GenerationTask
from tests.conftest import accepts, free_port, wait_until

from .conftest import BASE_DIR, Cluster

HONCHO = Path(sys.executable).parent / "honcho"


def two_ports_100_apart() -> int:
    """A free port whose +100 is free too: honcho numbers the worker's $PORT base+100."""
    while True:
        base = free_port()
        if base + 100 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 100))
            except OSError:
                continue
        return base


@pytest.mark.skipif(not HONCHO.exists(), reason="honcho is not installed (pip install -r requirements-dev.txt)")
@pytest.mark.django_db(transaction=True)
def test_honcho_runs_the_procfiles_web_and_worker_with_the_workers_metrics_port(
        cluster: Cluster, make_task: Any) -> None:
    base = two_ports_100_apart()
    venv_bin = str(Path(sys.executable).parent)
    honcho = cluster.spawn("honcho", [str(HONCHO), "start", "-f", str(BASE_DIR / "Procfile"), "-p", str(base)],
                           PATH=f"{venv_bin}:{cluster.env['PATH']}", WORKER_CONCURRENCY="1")
    wait_until(lambda: (accepts(base) and accepts(base + 100)) or honcho.poll() is not None, timeout=60)
    assert honcho.poll() is None, cluster.tail("honcho")
    assert httpx.get(f"http://127.0.0.1:{base}/healthz", timeout=30).status_code == 200
    task = make_task()
    wait_until(lambda: GenerationTask.objects.get(pk=task.pk).status == "completed", timeout=60)
    metrics = httpx.get(f"http://127.0.0.1:{base + 100}/metrics", timeout=30).text
    assert 'imagegen_task_outcomes_total{error_code="",outcome="completed"} 1.0' in metrics, metrics[-2000:]
    honcho.send_signal(signal.SIGTERM)  # honcho passes it on to both
    honcho.wait(40)
    assert "stopped after 1 tasks" in cluster.log("honcho")  # the worker's graceful stop, not a kill
