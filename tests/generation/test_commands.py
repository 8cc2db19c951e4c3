from __future__ import annotations

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.django_db


def test_ensure_user_creates_then_updates_idempotently():
    call_command("ensure_user", "demo", "--password", "first-pass-1", "--superuser")
    call_command("ensure_user", "demo", "--password", "second-pass-2")
    user = get_user_model().objects.get(username="demo")
    assert user.is_superuser and user.is_staff
    assert authenticate(username="demo", password="second-pass-2") == user
    assert get_user_model().objects.count() == 1


def test_ensure_user_refuses_a_short_password():
    with pytest.raises(CommandError):
        call_command("ensure_user", "demo", "--password", "short")
    assert not get_user_model().objects.exists()
