"""``manage.py ensure_user NAME --password P``: create a user, or reset an existing one's password."""
from __future__ import annotations

import argparse
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Create the user NAME with the given password, or set that password if the user exists "
        "(idempotent, for set-up scripts). --superuser also makes it staff and superuser."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--password", required=True)
        parser.add_argument("--superuser", action="store_true")

    def handle(self, *args: Any, username: str, password: str, superuser: bool, **options: Any) -> None:
        if not username.strip() or len(password) < 8:
            raise CommandError("Give a non-empty username and a password of at least 8 characters.")
        user, created = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        if superuser:
            user.is_staff = user.is_superuser = True
        user.save()
        self.stdout.write(f"{'Created' if created else 'Updated'} user {username!r}.")
