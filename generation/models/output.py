"""``TaskOutput``: one rendered output of a completed task (its file, size, format and report).

A task renders its one cut-out once per output it asked for (``outputs`` or
``presets``; one output otherwise). Each output is a row here, written in the
same transaction that completes the task, before the task's own save, so the
``task_complete`` event (built from ``GenerationTask.live_state``) already
lists them. The first output's file is also the task's ``result_image``.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import timezone

from .links import task_url

if TYPE_CHECKING:
    from .task import GenerationTask


def output_upload_to(instance: Any, filename: str) -> str:
    # Unguessable, never derived from the client's filename; next to the single results.
    return f"results/{timezone.now():%Y/%m/%d}/{uuid.uuid4().hex}.{filename.rsplit('.', 1)[-1].lower()}"


@dataclass(frozen=True)
class OutputRecord:
    """A stored output file waiting to be recorded (what ``Completion.outputs`` holds)."""

    name: str
    preset: str
    format: str
    width: int
    height: int
    bytes: int
    file_name: str
    content_type: str
    compliance: dict[str, Any] | None = None


class TaskOutput(models.Model):
    task = models.ForeignKey("generation.GenerationTask", on_delete=models.CASCADE, related_name="outputs")
    index = models.PositiveSmallIntegerField()  # 0 = the task's result_image
    name = models.CharField(max_length=40)
    preset = models.CharField(max_length=32)
    format = models.CharField(max_length=8)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bytes = models.PositiveIntegerField()
    file = models.FileField(upload_to=output_upload_to, max_length=255)
    content_type = models.CharField(max_length=50)
    compliance = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["task", "index"]
        constraints = [
            models.UniqueConstraint(fields=["task", "index"], name="task_output_unique_index"),
            models.UniqueConstraint(fields=["task", "name"], name="task_output_unique_name"),
        ]

    def __str__(self) -> str:
        return f"output {self.index} ({self.name}) of task {self.task_id}"

    @property
    def needs_review(self) -> bool:
        return bool((self.compliance or {}).get("needs_review", False))

    @property
    def extension(self) -> str:
        return self.file.name.rsplit(".", 1)[-1] if self.file else ""

    def get_url(self, url: Callable[[str, int], str] = task_url) -> str:
        # Names are URL-safe by construction (spec._NAME); the first output is also result_image_url.
        return f"{url('task-result', self.task_id)}?output={self.name}"

    def as_json(self, url: Callable[[str, int], str] = task_url) -> dict[str, Any]:
        """One entry of the task JSON's ``outputs`` (``url``: ``task_url`` or a batch's ``task_url_maker()``)."""
        return {
            "name": self.name, "preset": self.preset, "format": self.format, "width": self.width,
            "height": self.height, "bytes": self.bytes, "url": self.get_url(url), "compliance": self.compliance,
        }

    @classmethod
    def from_record(cls, task: GenerationTask, index: int, record: OutputRecord) -> TaskOutput:
        out = cls(
            task=task, index=index, name=record.name, preset=record.preset, format=record.format,
            width=record.width, height=record.height, bytes=record.bytes,
            content_type=record.content_type, compliance=record.compliance,
        )
        out.file.name = record.file_name
        return out
