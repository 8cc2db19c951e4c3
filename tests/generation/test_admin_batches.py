"""The batch admin: its list and filters, the counts and tasks it shows, and what it will not let anyone edit."""
from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from generation.engine.spec import parse_job
from generation.models import Batch, BatchPart, GenerationTask
from notifications.models import Event
from tests.conftest import product_photo

from .builders import advance, worker_row

pytestmark = pytest.mark.django_db

S = GenerationTask.Status
CHANGELIST = "admin:generation_batch_changelist"


def make_batch(user: Any, count: int, client_ref: str | None = None) -> Batch:
    options = parse_job({}).to_options()
    parts = [BatchPart(SimpleUploadedFile(f"shoe-{i}.jpg", product_photo()), "image/jpeg", options, f"shoe-{i}.jpg")
             for i in range(count)]
    batch, created = Batch.submit(user=user, parts=parts, options=options, client_ref=client_ref)
    assert created
    return batch


def listed(admin_client: Any, **query: str) -> list[int]:
    return [b.pk for b in admin_client.get(reverse(CHANGELIST), query).context["cl"].result_list]


def test_it_lists_batches_with_their_progress_counts_and_a_link_to_their_tasks(admin_client: Any, user: Any) -> None:
    batch = make_batch(user, 3, client_ref="spring-catalogue")
    first, second, _ = batch.tasks.order_by("id")
    worker = worker_row("runner-a")
    advance(first, S.COMPLETED, worker)
    advance(second, S.FAILED, worker)

    page = admin_client.get(reverse(CHANGELIST)).content.decode()

    assert '<progress value="66" max="100"></progress> 66%' in page
    assert "spring-catalogue" in page and "processing" in page
    link = reverse("admin:generation_generationtask_changelist") + f"?batch={batch.pk}"
    assert f'<a href="{link}">3 task(s)</a>' in page


def test_its_task_link_lists_exactly_that_batchs_tasks(admin_client: Any, user: Any, make_task: Any) -> None:
    batch = make_batch(user, 2)
    make_batch(user, 1)
    make_task()  # a single submission

    response = admin_client.get(reverse("admin:generation_generationtask_changelist"), {"batch": batch.pk})

    assert sorted(t.pk for t in response.context["cl"].result_list) == batch.task_ids()


def test_it_filters_by_status_and_user_and_searches_by_id_username_and_client_ref(
    admin_client: Any, user: Any, other_user: Any
) -> None:
    mine = make_batch(user, 1, client_ref="alice-ref")
    theirs = make_batch(other_user, 1)
    theirs.cancel()

    assert listed(admin_client, status__exact="canceled") == [theirs.pk]
    assert listed(admin_client, status__exact="pending") == [mine.pk]
    assert listed(admin_client, user__id__exact=str(other_user.pk)) == [theirs.pk]
    assert listed(admin_client, q="bob") == [theirs.pk]
    assert listed(admin_client, q="alice-ref") == [mine.pk]
    assert listed(admin_client, q=str(theirs.pk)) == [theirs.pk]


def test_the_change_page_shows_counts_and_tasks_read_only(admin_client: Any, user: Any) -> None:
    batch = make_batch(user, 2)
    done = advance(batch.tasks.order_by("id").first(), S.COMPLETED, worker_row())

    response = admin_client.get(reverse("admin:generation_batch_change", args=[batch.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert f'<a href="{reverse("admin:generation_generationtask_change", args=[done.pk])}">{done.pk}</a>' in page
    assert "shoe-0.jpg" in page and "shoe-1.jpg" in page
    completed = reverse("admin:generation_generationtask_changelist") + f"?batch={batch.pk}&amp;status__exact=completed"
    assert f'<a href="{completed}">1</a>' in page
    assert 'name="_save"' not in page and 'name="status"' not in page  # counts and status are derived
    # Posting a form anyway changes nothing: every field is read-only.
    admin_client.post(reverse("admin:generation_batch_change", args=[batch.pk]), {"status": "completed", "total": 9})
    batch.refresh_from_db()
    assert (batch.status, batch.total) == ("processing", 2)


def test_no_batch_can_be_added_in_the_admin(admin_client: Any) -> None:
    assert admin_client.get(reverse("admin:generation_batch_add")).status_code == 403


def test_the_cancel_action_cancels_each_unfinished_task_with_its_events_and_logs_it(
    admin_client: Any, user: Any
) -> None:
    batch = make_batch(user, 2)
    already = make_batch(user, 1)
    already.cancel()
    before = Event.objects.filter(user=user).count()

    response = admin_client.post(reverse(CHANGELIST), {"action": "cancel_batches",
                                                       "_selected_action": [batch.pk, already.pk]}, follow=True)

    batch.refresh_from_db()
    assert (batch.status, batch.canceled) == ("canceled", 2)
    shown = [str(m) for m in response.context["messages"]]
    assert "Canceled 2 task(s)." in shown
    assert any(m.startswith(f"Batch {already.pk}: a canceled batch cannot be canceled") for m in shown)
    new = list(Event.objects.filter(user=user, seq__gt=before).order_by("seq").values_list("type", flat=True))
    assert new.count("task_canceled") == 2 and new[-1] == "batch_complete"
    entries = LogEntry.objects.filter(object_id=str(batch.pk), content_type__model="batch")
    assert [(e.action_flag, e.change_message) for e in entries] == [(CHANGE, "Canceled 2 task(s) (admin action)")]


def test_only_finished_batches_can_be_deleted_and_their_tasks_stay(admin_client: Any, user: Any) -> None:
    running = make_batch(user, 1)
    finished = make_batch(user, 1)
    finished.cancel()
    task_id = finished.task_ids()[0]

    assert admin_client.get(reverse("admin:generation_batch_delete", args=[running.pk])).status_code == 403

    def delete(*batches: Batch) -> Any:
        return admin_client.post(reverse(CHANGELIST), {"action": "delete_selected", "post": "yes",
                                                       "_selected_action": [b.pk for b in batches]})

    assert delete(running, finished).status_code == 403  # one running batch refuses the whole selection
    assert Batch.objects.count() == 2
    assert delete(finished).status_code == 302
    assert list(Batch.objects.values_list("id", flat=True)) == [running.pk]
    assert LogEntry.objects.filter(object_id=str(finished.pk), action_flag=DELETION).count() == 1
    assert GenerationTask.objects.get(pk=task_id).batch_id is None


def test_it_denies_batch_pages_to_users_who_are_not_staff(client: Any, user: Any) -> None:
    batch = make_batch(user, 1)
    client.force_login(user)
    for url in (reverse(CHANGELIST), reverse("admin:generation_batch_change", args=[batch.pk])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
