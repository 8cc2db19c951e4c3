"""The admin lists endpoints (never their secrets) and deliveries, and redelivers through the model."""
from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(django_user_model: Any) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password="root-pass-123"))
    return client


def test_the_admin_lists_endpoints_and_deliveries_and_redelivers(admin_client_: Client, user: Any, make_task: Any,
                                                                loopback: None) -> None:
    endpoint = WebhookEndpoint.create_for(user, url="http://127.0.0.1:9/hook", events=["*"])
    make_task()
    WebhookEndpoint.materialize()
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", next_attempt_at=None)

    listing = admin_client_.get("/admin/webhooks/webhookendpoint/")
    assert listing.status_code == 200 and b"http://127.0.0.1:9/hook" in listing.content
    page = admin_client_.get(f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/")
    assert page.status_code == 200 and endpoint.secret.encode() not in page.content
    assert admin_client_.get("/admin/webhooks/webhookdelivery/").status_code == 200

    response = admin_client_.post("/admin/webhooks/webhookdelivery/",
                                  {"action": "redeliver", "_selected_action": [delivery.pk]}, follow=True)
    assert response.status_code == 200 and b"1 delivery(ies) scheduled again" in response.content
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.next_attempt_at is not None
