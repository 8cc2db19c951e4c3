"""The pause-intake switch: flipped on the dashboard, refusing new tasks with 503 + Retry-After."""
from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from generation.models import GenerationTask, QueueControl

pytestmark = pytest.mark.django_db


def submit(client: APIClient, photo: bytes) -> Any:
    return client.post("/api/tasks/", {"image": SimpleUploadedFile("p.jpg", photo, "image/jpeg")}, format="multipart")


def test_it_refuses_submissions_with_503_and_retry_after_while_paused(
    admin_client: Any, auth_client: APIClient, photo_bytes: bytes, settings: Any, caplog: Any
) -> None:
    settings.IMAGEGEN_INTAKE_RETRY_AFTER = 120
    response = admin_client.post(reverse("admin:generation_intake"), {"paused": "1", "reason": "database upgrade"})
    assert response.status_code == 302
    assert QueueControl.is_intake_paused()

    refused = submit(auth_client, photo_bytes)

    assert refused.status_code == 503
    assert refused["Retry-After"] == "120"
    assert refused.json() == {"detail": "Task submission is paused (database upgrade). Try again later."}
    assert GenerationTask.objects.count() == 0
    assert not [r for r in caplog.records if r.name == "django.request"]  # a decision, not a server error


def test_it_accepts_submissions_again_after_resuming(admin_client: Any, auth_client: APIClient, photo_bytes: bytes) -> None:
    admin_client.post(reverse("admin:generation_intake"), {"paused": "1"})
    admin_client.post(reverse("admin:generation_intake"), {"paused": "0"})

    assert submit(auth_client, photo_bytes).status_code == 201
    assert GenerationTask.objects.count() == 1


def test_it_logs_each_switch_in_the_admin_history(admin_client: Any, admin_user: Any) -> None:
    admin_client.post(reverse("admin:generation_intake"), {"paused": "1", "reason": "deploy"})
    admin_client.post(reverse("admin:generation_intake"), {"paused": "0"})

    entries = LogEntry.objects.filter(user=admin_user).order_by("action_time", "id")
    assert [(e.action_flag, e.change_message) for e in entries] == [
        (CHANGE, "Paused intake: deploy"), (CHANGE, "Resumed intake"),
    ]


def test_it_shows_the_switch_state_on_the_dashboard(admin_client: Any) -> None:
    assert "Open: new tasks are accepted." in admin_client.get(reverse("admin:generation_dashboard")).content.decode()
    admin_client.post(reverse("admin:generation_intake"), {"paused": "1", "reason": "maintenance"})

    page = admin_client.get(reverse("admin:generation_dashboard")).content.decode()

    assert "Paused by admin" in page and "maintenance" in page and 'value="Resume intake"' in page


def test_it_lets_only_staff_with_change_permission_flip_the_switch(
    client: Any, user: Any, staff_user: Any, django_user_model: Any
) -> None:
    client.force_login(user)
    response = client.post(reverse("admin:generation_intake"), {"paused": "1"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]

    client.force_login(staff_user)  # staff, but without permissions on tasks
    assert client.post(reverse("admin:generation_intake"), {"paused": "1"}).status_code == 403
    assert client.get(reverse("admin:generation_dashboard")).status_code == 403
    assert not QueueControl.is_intake_paused()


def test_it_refuses_get_on_the_switch(admin_client: Any) -> None:
    assert admin_client.get(reverse("admin:generation_intake")).status_code == 405
