"""The admin lists every key (prefix, owner, last use, revoked) and revokes through the model."""
from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apikeys.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(django_user_model: Any) -> Client:
    admin = django_user_model.objects.create_superuser(username="root", password="root-pass-123")
    client = Client()
    client.force_login(admin)
    return client


def test_it_lists_active_and_revoked_keys_with_owner_and_never_the_key(admin_client_: Client, user: Any) -> None:
    live, live_raw = ApiKey.issue(user=user, name="live one")
    gone, _ = ApiKey.issue(user=user, name="gone one")
    gone.revoke()
    page = admin_client_.get("/admin/apikeys/apikey/").content.decode()
    assert live.prefix in page and gone.prefix in page and "alice" in page
    assert live_raw not in page
    revoked_only = admin_client_.get("/admin/apikeys/apikey/?revoked=yes").content.decode()
    assert gone.prefix in revoked_only and live.prefix not in revoked_only


def test_the_revoke_action_revokes(admin_client_: Client, user: Any) -> None:
    key, _ = ApiKey.issue(user=user, name="k")
    response = admin_client_.post("/admin/apikeys/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked
