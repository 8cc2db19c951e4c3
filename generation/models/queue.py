"""Operator switches for the whole queue."""
from __future__ import annotations

from django.db import models
from django.utils import timezone


class QueueControl(models.Model):
    """Operator switches for the whole queue: a single row (pk 1), created on first use.
    Not task state: plain updates, no events."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    intake_paused = models.BooleanField(default=False)
    intake_paused_at = models.DateTimeField(null=True, blank=True)
    intake_paused_by = models.CharField(max_length=150, blank=True)
    intake_reason = models.CharField(max_length=200, blank=True)
    # When automatic retention last ran, so a fleet of workers purges at most every N minutes.
    retention_ran_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "queue control"

    def __str__(self) -> str:
        return "queue control (intake paused)" if self.intake_paused else "queue control"

    @classmethod
    def get(cls) -> QueueControl:
        control, _ = cls.objects.get_or_create(pk=1)
        return control

    @classmethod
    def is_intake_paused(cls) -> bool:
        return cls.objects.filter(pk=1, intake_paused=True).exists()

    def set_intake(self, *, paused: bool, by: str = "", reason: str = "") -> None:
        self.intake_paused = paused
        self.intake_paused_at = timezone.now() if paused else None
        self.intake_paused_by = by[:150] if paused else ""
        self.intake_reason = reason[:200] if paused else ""
        self.save(update_fields=["intake_paused", "intake_paused_at", "intake_paused_by", "intake_reason"])
