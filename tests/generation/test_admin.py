"""The task and worker admin: pages, access, and actions that go through the model's transitions."""
from __future__ import annotations

import re
from typing import Any, Callable

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission
from django.core.files.storage import default_storage
from django.urls import reverse

from generation.models import GenerationTask, LostClaim
from notifications.models import Event

from .builders import advance, claim, worker_row

pytestmark = pytest.mark.django_db

S = GenerationTask.Status
CHANGELIST = "admin:generation_generationtask_changelist"


def run_action(admin_client: Any, action: str, tasks: list[GenerationTask], **extra: str) -> Any:
    return admin_client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": [t.pk for t in tasks], **extra}, follow=True
    )


def events_of(task: GenerationTask) -> list[tuple[str, str]]:
    return [(e.type, e.data["status"]) for e in Event.objects.filter(task_id=task.pk).order_by("seq")]


def log_of(task: GenerationTask) -> list[tuple[int, str]]:
    entries = LogEntry.objects.filter(object_id=str(task.pk), content_type__model="generationtask").order_by("id")
    return [(e.action_flag, e.change_message) for e in entries]


# --- pages and access ----------------------------------------------------------------------
def test_it_renders_the_changelist_with_progress_thumbnails_and_workers(
    admin_client: Any, make_task: Callable[..., GenerationTask]
) -> None:
    worker = worker_row("runner-a")
    done = advance(make_task(), S.COMPLETED, worker)
    running = advance(make_task(), S.PROCESSING, worker)

    page = admin_client.get(reverse(CHANGELIST)).content.decode()

    assert f'<progress value="{running.progress}" max="100">' in page
    assert reverse("admin:generation_generationtask_image", args=[done.pk, "result"]) + "?thumb=1" in page
    assert reverse("admin:generation_generationtask_image", args=[done.pk, "input"]) + "?thumb=1" in page
    assert "runner-a" in page and "Queue dashboard" in page
    assert "/media/" not in page


def test_it_filters_by_status_and_searches_by_id_and_username(
    admin_client: Any, make_task: Callable[..., GenerationTask], other_user: Any
) -> None:
    mine = make_task()
    theirs = advance(make_task(user=other_user), S.CANCELED, worker_row())

    def listed(**query: str) -> list[int]:
        return [t.pk for t in admin_client.get(reverse(CHANGELIST), query).context["cl"].result_list]

    assert listed(status__exact="canceled") == [theirs.pk]
    assert listed(q="bob") == [theirs.pk]
    assert listed(q=str(mine.pk)) == [mine.pk]
    assert listed(q="no-such-user") == []
    assert listed(user__id__exact=str(other_user.pk)) == [theirs.pk]


def test_it_shows_the_event_timeline_read_only_on_the_change_page(
    admin_client: Any, make_task: Callable[..., GenerationTask]
) -> None:
    task = advance(make_task(), S.FAILED, worker_row(), error_code="safety_block")

    response = admin_client.get(reverse("admin:generation_generationtask_change", args=[task.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    for seq, kind in ((1, "task_created"), (2, "task_update"), (3, "task_failed")):
        assert f"<td>{seq}</td>" in page and kind in page
    assert "safety_block" in page
    assert 'name="_save"' not in page  # nothing to edit: changes are actions


def test_it_denies_admin_pages_to_users_who_are_not_staff(
    client: Any, user: Any, make_task: Callable[..., GenerationTask]
) -> None:
    task = make_task()
    client.force_login(user)
    for url in (
        reverse(CHANGELIST),
        reverse("admin:generation_generationtask_change", args=[task.pk]),
        reverse("admin:generation_dashboard"),
        reverse("admin:generation_generationtask_image", args=[task.pk, "input"]),
        reverse("admin:generation_workerprocess_changelist"),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url


def test_it_lets_staff_with_view_permission_see_but_not_act(
    client: Any, staff_user: Any, make_task: Callable[..., GenerationTask]
) -> None:
    task = make_task()
    client.force_login(staff_user)
    assert client.get(reverse(CHANGELIST)).status_code == 403
    staff_user.user_permissions.add(Permission.objects.get(codename="view_generationtask"))

    assert client.get(reverse(CHANGELIST)).status_code == 200
    assert client.get(reverse("admin:generation_dashboard")).status_code == 200
    response = client.post(reverse(CHANGELIST), {"action": "cancel_tasks", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.status == S.PENDING
    assert response.status_code in (200, 302)


def test_it_serves_images_and_thumbnails_only_through_the_checked_view(
    admin_client: Any, make_task: Callable[..., GenerationTask], photo_bytes: bytes
) -> None:
    task = advance(make_task(), S.COMPLETED, worker_row())
    url = reverse("admin:generation_generationtask_image", args=[task.pk, "input"])

    full = admin_client.get(url)
    thumb = admin_client.get(url + "?thumb=1")

    assert full.status_code == 200 and b"".join(full.streaming_content) == photo_bytes
    assert full["Content-Type"] == "image/jpeg" and "sandbox" in full["Content-Security-Policy"]
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    assert thumb.content[:3] == b"\xff\xd8\xff" and len(thumb.content) < len(photo_bytes)
    assert admin_client.get(reverse("admin:generation_generationtask_image", args=[task.pk, "other"])).status_code == 404
    pending = make_task()
    result_url = reverse("admin:generation_generationtask_image", args=[pending.pk, "result"])
    assert admin_client.get(result_url).status_code == 404


# --- actions -----------------------------------------------------------------------------
def test_it_retries_failed_tasks_through_the_model(admin_client: Any, make_task: Callable[..., GenerationTask]) -> None:
    task = advance(make_task(), S.FAILED, worker_row())

    response = run_action(admin_client, "retry_tasks", [task])

    task.refresh_from_db()
    assert task.status == S.PENDING and task.attempts == 0
    assert events_of(task)[-1] == ("task_update", "pending")
    assert log_of(task) == [(CHANGE, "Retried (admin action)")]
    assert "Retried 1 task(s)." in response.content.decode()


def test_it_cancels_pending_and_processing_tasks_and_skips_finished_ones(
    admin_client: Any, make_task: Callable[..., GenerationTask]
) -> None:
    worker = worker_row()
    pending, running = make_task(), advance(make_task(), S.PROCESSING, worker)
    done = advance(make_task(), S.COMPLETED, worker)
    done_events = events_of(done)

    response = run_action(admin_client, "cancel_tasks", [pending, running, done])

    for task in (pending, running):
        task.refresh_from_db()
        assert task.status == S.CANCELED
        assert events_of(task)[-1] == ("task_canceled", "canceled")
        assert log_of(task) == [(CHANGE, "Canceled (admin action)")]
    done.refresh_from_db()
    assert done.status == S.COMPLETED and events_of(done) == done_events and log_of(done) == []
    page = response.content.decode()
    assert "Canceled 2 task(s)." in page and f"Task {done.pk}: a completed task cannot be canceled." in page


def test_it_requeues_a_stuck_task_and_fences_its_worker_out(
    admin_client: Any, make_task: Callable[..., GenerationTask]
) -> None:
    task = make_task()
    token = claim(task, worker_row("stuck"))
    pending = make_task()

    response = run_action(admin_client, "requeue_tasks", [task, pending])

    task.refresh_from_db()
    assert task.status == S.PENDING and task.worker is None and task.attempts == 0
    assert events_of(task)[-1] == ("task_update", "pending")
    assert log_of(task) == [(CHANGE, "Requeued (admin action)")]
    assert log_of(pending) == []
    assert "only a processing task can be requeued" in response.content.decode()
    with pytest.raises(LostClaim):  # the stuck worker wakes up: its result is refused
        task.complete(token, result_name="results/x.jpg", content_type="image/jpeg", compliance=None)


def test_it_deletes_finished_tasks_with_their_files(
    admin_client: Any, make_task: Callable[..., GenerationTask], django_capture_on_commit_callbacks: Any
) -> None:
    worker = worker_row()
    done = advance(make_task(), S.COMPLETED, worker)
    failed = advance(make_task(), S.FAILED, worker)
    files = [done.input_image.name, done.result_image.name, failed.input_image.name]
    assert all(default_storage.exists(name) for name in files)

    confirm = run_action(admin_client, "delete_selected", [done, failed])
    assert confirm.status_code == 200 and "Are you sure" in confirm.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "delete_selected", [done, failed], post="yes")

    assert response.status_code == 200
    assert not GenerationTask.objects.filter(pk__in=[done.pk, failed.pk]).exists()
    assert not any(default_storage.exists(name) for name in files)
    assert log_of(done) == [(DELETION, "")] and log_of(failed) == [(DELETION, "")]


def test_it_refuses_to_delete_a_selection_with_active_tasks(
    admin_client: Any, make_task: Callable[..., GenerationTask]
) -> None:
    worker = worker_row()
    done, active = advance(make_task(), S.COMPLETED, worker), advance(make_task(), S.PROCESSING, worker)

    confirm = run_action(admin_client, "delete_selected", [done, active])
    forced = admin_client.post(
        reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [done.pk, active.pk], "post": "yes"}
    )

    assert "Cannot delete" in confirm.content.decode()
    assert forced.status_code == 403
    assert GenerationTask.objects.filter(pk__in=[done.pk, active.pk]).count() == 2
    assert default_storage.exists(active.input_image.name)
    assert log_of(done) == [] and log_of(active) == []


def test_it_keeps_a_task_that_became_active_after_the_confirmation(
    admin_client: Any, make_task: Callable[..., GenerationTask], rf: Any, admin_user: Any
) -> None:
    from django.contrib import admin as django_admin
    from django.contrib.messages.storage.fallback import FallbackStorage

    done = advance(make_task(), S.FAILED, worker_row())
    model_admin = django_admin.site._registry[GenerationTask]
    request = rf.post("/")
    request.user, request.session = admin_user, {}
    request._messages = FallbackStorage(request)
    queryset = GenerationTask.objects.filter(pk=done.pk)
    done.retry()  # retried between the confirmation page and the delete

    model_admin.delete_queryset(request, queryset)

    assert GenerationTask.objects.get(pk=done.pk).status == S.PENDING
    assert [str(m) for m in request._messages] == [f"Kept active task(s) {done.pk}: cancel them first."]


def test_it_refuses_the_delete_page_of_an_active_task(admin_client: Any, make_task: Callable[..., GenerationTask]) -> None:
    task = make_task()
    assert admin_client.get(reverse("admin:generation_generationtask_delete", args=[task.pk])).status_code == 403


# --- workers ---------------------------------------------------------------------------
def test_it_lists_workers_with_liveness_heartbeat_age_and_current_task(
    admin_client: Any, make_task: Callable[..., GenerationTask]
) -> None:
    live = worker_row("alive-1", heartbeat_age=3.0, pid=4242, concurrency=3, tasks_done=7)
    worker_row("gone-1", stopped=True)
    running = advance(make_task(), S.PROCESSING, live)

    response = admin_client.get(reverse("admin:generation_workerprocess_changelist"))

    page = response.content.decode()
    assert response.status_code == 200
    rows = {w.name: w for w in response.context["cl"].result_list}
    assert set(rows) == {"alive-1", "gone-1"}
    assert '<td class="field-pid">4242</td>' in page
    assert re.search(r'<td class="field-heartbeat_age">(\d+\.\d) s</td>', page)
    assert reverse("admin:generation_generationtask_change", args=[running.pk]) in page
    assert 'alt="True"' in page and 'alt="False"' in page  # the alive? column
    alive_only = admin_client.get(reverse("admin:generation_workerprocess_changelist"), {"alive": "yes"})
    assert [w.name for w in alive_only.context["cl"].result_list] == ["alive-1"]


def test_it_keeps_media_out_of_the_url_configuration() -> None:
    from django.urls import Resolver404, resolve

    with pytest.raises(Resolver404):  # images are only reachable through owner- or staff-checked views
        resolve("/media/inputs/x.jpg")


def test_the_change_page_lists_every_output_with_its_preview_and_verdict(
    admin_client: Any, make_task: Callable[..., GenerationTask], settings: Any
) -> None:
    from generation.engine.spec import parse_job
    from generation.worker import Worker

    settings.IMAGEGEN_BACKEND, settings.IMAGEGEN_SEGMENTER = "local", "classical"
    task = make_task(options=parse_job({"presets": "taobao,pinduoduo"}).to_options())
    assert Worker(worker_id="admin").run_once() is True
    task.refresh_from_db()
    page = admin_client.get(reverse("admin:generation_generationtask_change", args=[task.pk])).content.decode()
    assert "<th>name</th>" in page and ">taobao<" in page and ">pinduoduo<" in page
    assert page.count("passed</td>") == 2
    second = reverse("admin:generation_generationtask_image", args=[task.pk, "output-1"])
    assert second in page
    served = admin_client.get(second)
    assert served.status_code == 200 and served["Content-Type"] == "image/jpeg"
    assert b"".join(served.streaming_content) == task.rendered_outputs()[1].file.read()
    assert admin_client.get(second + "?thumb=1").status_code == 200
    missing = reverse("admin:generation_generationtask_image", args=[task.pk, "output-2"])
    assert admin_client.get(missing).status_code == 404
