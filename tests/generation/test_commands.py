"""The management commands: queue_stats, rescue_tasks, purge_tasks, cancel_tasks, worker_health on known data sets,
and ensure_user."""
from __future__ import annotations

import json
import socket
from typing import Any, Callable

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError

from generation.models import GenerationTask
from notifications.models import Event

from .builders import advance, ago, claim, place, worker_row

pytestmark = pytest.mark.django_db

S = GenerationTask.Status


def run(name: str, *args: str, capsys: Any) -> str:
    call_command(name, *args)
    return capsys.readouterr().out


def snapshot() -> list[tuple[int, str, int]]:
    return list(GenerationTask.objects.order_by("id").values_list("id", "status", "attempts"))


def dry_run(name: str, *args: str, capsys: Any) -> str:
    """``name *args --dry-run``'s output, once it is checked to have changed no task and written no event."""
    before, events = snapshot(), Event.objects.count()
    out = run(name, *args, "--dry-run", capsys=capsys)
    assert snapshot() == before and Event.objects.count() == events
    return out


# --- rescue_tasks ------------------------------------------------------------------------
@pytest.fixture
def orphans(make_task: Callable[..., GenerationTask]) -> dict[str, GenerationTask]:
    silent, live = worker_row("silent", heartbeat_age=600), worker_row("alive", heartbeat_age=1)
    retry = make_task()
    claim(retry, silent)
    spent = make_task()
    for _ in range(spent.max_attempts):  # every attempt used up, the last one on the silent worker
        claim(spent, silent)
        if spent.attempts < spent.max_attempts:
            spent.fail(spent.claim_token, code="upstream_timeout", message="slow", transient=True)
            place(spent, run_after=ago(1))
    healthy = make_task()
    claim(healthy, live)
    return {"retry": retry, "spent": spent, "healthy": healthy}


def test_it_lists_orphaned_tasks_on_a_dry_run_and_changes_nothing(orphans: dict[str, GenerationTask], capsys: Any) -> None:
    out = dry_run("rescue_tasks", "--timeout", "30", capsys=capsys)

    assert f"Would take back task {orphans['retry'].pk} from silent (attempt 1/3: retry)" in out
    assert f"Would take back task {orphans['spent'].pk} from silent (attempt 3/3: fail)" in out
    assert f"task {orphans['healthy'].pk} " not in out


def test_it_takes_back_orphaned_tasks_through_the_model(orphans: dict[str, GenerationTask], capsys: Any) -> None:
    data = json.loads(run("rescue_tasks", "--timeout", "30", "--json", capsys=capsys))

    assert data["rescued"] == sorted([orphans["retry"].pk, orphans["spent"].pk])
    for key, status in (("retry", S.PENDING), ("spent", S.FAILED), ("healthy", S.PROCESSING)):
        orphans[key].refresh_from_db()
        assert orphans[key].status == status, key
    assert orphans["spent"].error_code == "worker_lost"
    last = Event.objects.filter(task_id=orphans["spent"].pk).order_by("-seq").first()
    assert (last.type, last.data["error_code"]) == ("task_failed", "worker_lost")


def test_it_rejects_a_bad_rescue_timeout() -> None:
    with pytest.raises(CommandError, match="more than 0 seconds"):
        call_command("rescue_tasks", "--timeout", "0")
    with pytest.raises(CommandError, match="not a number"):
        call_command("rescue_tasks", "--timeout", "soon")


# --- purge_tasks -------------------------------------------------------------------------
@pytest.fixture
def aged(make_task: Callable[..., GenerationTask]) -> dict[str, GenerationTask]:
    """Finished tasks 40 days old and 1 day old, plus active tasks created 40 days ago."""
    worker = worker_row()
    tasks: dict[str, GenerationTask] = {}
    for status in (S.COMPLETED, S.FAILED, S.CANCELED):
        tasks[f"old_{status}"] = place(advance(make_task(), status, worker), finished_at=ago(days=40))
    tasks["recent"] = place(advance(make_task(), S.COMPLETED, worker), finished_at=ago(days=1))
    tasks["old_pending"] = place(make_task(), created_at=ago(days=40), run_after=ago(days=40), updated_at=ago(days=40))
    tasks["old_processing"] = place(advance(make_task(), S.PROCESSING, worker), created_at=ago(days=40),
                                    started_at=ago(days=40), updated_at=ago(days=40))
    Event.objects.filter(task_id=tasks["old_completed"].pk).update(created_at=ago(days=40))
    return tasks


def files_of(task: GenerationTask) -> list[str]:
    return [name for name in (task.input_image.name, task.result_image.name) if name]


def test_it_counts_what_a_purge_would_delete_on_a_dry_run(aged: dict[str, GenerationTask], capsys: Any) -> None:
    data = json.loads(dry_run("purge_tasks", "--older-than", "30d", "--json", capsys=capsys))

    assert (data["tasks"], data["files"], data["events"], data["dry_run"]) == (3, 4, 3, True)
    assert all(default_storage.exists(name) for task in aged.values() for name in files_of(task))


def test_it_purges_old_finished_tasks_with_files_and_old_events(
    aged: dict[str, GenerationTask], capsys: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        out = run("purge_tasks", "--older-than", "30d", capsys=capsys)

    assert "Deleted 3 completed/failed/canceled task(s) finished more than 30d ago, 4 image file(s) and 3 event(s)." in out
    remaining = set(GenerationTask.objects.values_list("id", flat=True))
    assert remaining == {aged["recent"].pk, aged["old_pending"].pk, aged["old_processing"].pk}
    for key, task in aged.items():
        assert all(default_storage.exists(n) == (task.pk in remaining) for n in files_of(task)), key
    assert not Event.objects.filter(task_id=aged["old_completed"].pk).exists()
    assert Event.objects.filter(task_id=aged["old_failed"].pk).exists()  # events go by their own age


def test_it_purges_only_the_given_statuses_in_batches(aged: dict[str, GenerationTask], capsys: Any) -> None:
    data = json.loads(run("purge_tasks", "--older-than", "30d", "--status", "failed,canceled", "--batch-size", "1",
                          "--keep-events", "--json", capsys=capsys))

    assert (data["tasks"], data["events"], data["statuses"]) == (2, 0, ["canceled", "failed"])
    assert GenerationTask.objects.filter(pk=aged["old_completed"].pk).exists()


@pytest.mark.parametrize(("args", "message"), [
    ((), "the following arguments are required: --older-than"),
    (("--older-than", "30"), "not a duration"),
    (("--older-than", "30d", "--status", "pending"), "pending not allowed here"),
    (("--older-than", "30d", "--status", "done"), "statuses are pending, processing"),
    (("--older-than", "30d", "--batch-size", "0"), "--batch-size must be at least 1"),
])
def test_it_rejects_bad_purge_arguments(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("purge_tasks", *args)


# --- cancel_tasks ------------------------------------------------------------------------
@pytest.fixture
def mixed(make_task: Callable[..., GenerationTask], other_user: Any) -> dict[str, GenerationTask]:
    worker = worker_row()
    return {
        "pending": make_task(),
        "processing": advance(make_task(), S.PROCESSING, worker),
        "done": advance(make_task(), S.COMPLETED, worker),
        "bobs": make_task(user=other_user),
    }


def test_it_lists_what_it_would_cancel_on_a_dry_run(mixed: dict[str, GenerationTask], capsys: Any) -> None:
    out = dry_run("cancel_tasks", "--user", "alice", capsys=capsys)

    assert f"Would cancel task {mixed['pending'].pk} (pending" in out
    assert f"Would cancel task {mixed['processing'].pk} (processing" in out
    assert "Would cancel 2 task(s)." in out


def test_it_cancels_by_id_user_and_status_through_the_model(mixed: dict[str, GenerationTask], capsys: Any) -> None:
    by_id = json.loads(run("cancel_tasks", str(mixed["pending"].pk), str(mixed["done"].pk), "--json", capsys=capsys))
    assert (by_id["canceled"], by_id["skipped"]) == ([mixed["pending"].pk], [mixed["done"].pk])

    by_status = json.loads(run("cancel_tasks", "--user", "alice", "--status", "processing", "--json", capsys=capsys))
    assert by_status["canceled"] == [mixed["processing"].pk]

    for key, status in (("pending", S.CANCELED), ("processing", S.CANCELED), ("done", S.COMPLETED), ("bobs", S.PENDING)):
        mixed[key].refresh_from_db()
        assert mixed[key].status == status, key
    last = Event.objects.filter(task_id=mixed["processing"].pk).order_by("-seq").first()
    assert last.type == "task_canceled"


@pytest.mark.parametrize(("args", "message"), [
    ((), "Say which tasks"),
    (("999999",), "No such task"),
    (("abc",), "is not a task id"),
    (("--user", "nobody"), "No user 'nobody'"),
    (("--status", "completed"), "completed not allowed here"),
])
def test_it_rejects_bad_cancel_arguments(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("cancel_tasks", *args)


# --- worker_health -----------------------------------------------------------------------
def test_it_reports_a_worker_with_a_recent_heartbeat_as_healthy(capsys: Any) -> None:
    worker_row("probe-me", heartbeat_age=2, host=socket.gethostname())

    assert "OK: probe-me" in run("worker_health", "--max-age", "30", "--name", "probe-me", capsys=capsys)


def test_it_reports_a_silent_stopped_or_missing_worker_as_unhealthy() -> None:
    host = socket.gethostname()
    worker_row("slow", heartbeat_age=60, host=host)
    worker_row("gone", heartbeat_age=1, host=host, stopped=True)
    for name, message in (("slow", "last beat 6"), ("gone", "no running worker 'gone'"), ("other", "no running")):
        with pytest.raises(CommandError, match=message) as caught:
            call_command("worker_health", "--max-age", "30", "--name", name)
        assert caught.value.returncode == 1


# --- ensure_user -------------------------------------------------------------------------
def test_it_creates_then_updates_a_user_idempotently_with_ensure_user() -> None:
    call_command("ensure_user", "demo", "--password", "first-pass-1", "--superuser")
    call_command("ensure_user", "demo", "--password", "second-pass-2")
    user = get_user_model().objects.get(username="demo")
    assert user.is_superuser and user.is_staff
    assert authenticate(username="demo", password="second-pass-2") == user
    assert get_user_model().objects.count() == 1


def test_it_refuses_a_short_password_with_ensure_user() -> None:
    with pytest.raises(CommandError):
        call_command("ensure_user", "demo", "--password", "short")
    assert not get_user_model().objects.exists()
