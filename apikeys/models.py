"""API keys: long-lived credentials for integrators, created and revoked by their owner.

A key is ``igk_`` plus 32 random bytes (URL-safe base64). Only its SHA-256
digest is stored: with 256 bits of entropy nobody can guess a key from its
digest, so a fast hash is the right one (a password hasher would cost tens of
milliseconds on every request and buy nothing). The digest is not keyed with
``SECRET_KEY`` on purpose: rotating that key signs everyone out of their
sessions, but must not break every integration at once.

A revoked key keeps its row (the admin lists it, with its last use); it never
authenticates again.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from .signals import key_revoked

KEY_PREFIX = "igk_"
#: Characters of the key shown in lists and the admin, so an owner can tell keys apart.
SHOWN_PREFIX_LENGTH = 12
#: ``last_used_at`` is written at most this often per key: a busy key must not cost a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def for_user(self, user: Any) -> ApiKeyQuerySet:
        return self.filter(user=user)

    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)

    def authenticate(self, raw: str) -> ApiKey | None:
        """The live key ``raw`` stands for (its owner active), with ``user`` loaded; None otherwise.

        Records the use (at most once per ``LAST_USED_RESOLUTION``).
        """
        if not raw.startswith(KEY_PREFIX) or len(raw) > 200:
            return None
        key = (self.active().filter(digest=digest(raw), user__is_active=True)
               .select_related("user").first())
        if key is not None:
            key.record_use()
        return key


class ApiKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=SHOWN_PREFIX_LENGTH, help_text="The key's first characters, for telling keys apart.")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the key; the key itself is never stored.")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def issue(cls, *, user: Any, name: str) -> tuple[ApiKey, str]:
        """A new key for ``user``: the row, and the key itself (shown once, never stored)."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(user=user, name=name, prefix=raw[:SHOWN_PREFIX_LENGTH], digest=digest(raw))
        return key, raw

    def record_use(self) -> None:
        now = timezone.now()
        if self.last_used_at is not None and now - self.last_used_at < LAST_USED_RESOLUTION:
            return
        # A conditional UPDATE, not save(): concurrent requests with one key write once,
        # and a revoke that raced this request is not undone.
        recent = now - LAST_USED_RESOLUTION
        ApiKey.objects.filter(pk=self.pk).filter(
            models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lt=recent)).update(last_used_at=now)
        self.last_used_at = now

    def revoke(self) -> bool:
        """Revoke the key now; open WebSockets and event streams using it are closed once
        this commits (``key_revoked``). False if it was revoked already."""
        with transaction.atomic():
            updated = ApiKey.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
            if updated:
                user_id, key_id = self.user_id, self.pk
                transaction.on_commit(lambda: key_revoked.send(sender=ApiKey, key_id=key_id, user_id=user_id),
                                      robust=True)
        self.refresh_from_db(fields=["revoked_at"])
        return bool(updated)
