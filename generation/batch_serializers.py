"""Batch input validation and the batch JSON (docs/api.md, "Batches").

Every part of a batch request is checked before anything is stored: each photo
goes through the very serializer a single submission does (``TaskCreateSerializer``,
so a batch accepts exactly the task options, and new ones follow), and any bad
part makes the whole request a 400 naming each bad part.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from rest_framework import serializers

from .models import MAX_BATCH_IMAGES, Batch, BatchPart
from .serializers import TaskCreateSerializer

#: Task fields a batch does not share: each part's photo is its own ``image`` part.
_NOT_SHARED = ("image", "image_url")


def shared_option_fields() -> dict[str, serializers.Field]:
    return {name: field for name, field in TaskCreateSerializer().get_fields().items() if name not in _NOT_SHARED}


class BatchCreateSerializer(serializers.Serializer):
    """``POST /api/batches/``: up to 100 ``image`` parts plus the task options, shared."""

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            "image": serializers.ListField(
                child=serializers.FileField(), min_length=1, max_length=MAX_BATCH_IMAGES,
                help_text=f"1 to {MAX_BATCH_IMAGES} product photos, each as for POST /api/tasks/",
            ),
            **shared_option_fields(),
            # Declared after the task fields: the batch's own reference wins over a task field of that name.
            "client_ref": serializers.CharField(required=False, max_length=200,
                                                help_text="your reference for the batch (e.g. a catalogue id)"),
        }

    #: The part that carries the photos: ``image`` files (multipart) or ``image_urls`` (JSON).
    photos_field = "image"

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        fields = self.get_fields()
        photos = self.photos_field
        unknown = sorted(set(data) - set(fields))
        if unknown:
            allowed = ", ".join(fields)
            raise serializers.ValidationError({n: [f"Unknown field {n!r}; the fields are {allowed}."] for n in unknown})
        errors: dict[str, list[str]] = {}
        shared: dict[str, str] = {}
        for name in fields:
            if name == photos or name not in data:
                continue
            values = data.getlist(name) if hasattr(data, "getlist") else [data[name]]
            if len(values) != 1:
                errors[name] = ["Give this field once: its value is shared by every photo of the batch."]
            else:
                shared[name] = values[0]
        client_ref = shared.pop("client_ref", None)
        if client_ref is not None and (not isinstance(client_ref, str) or len(client_ref) > 200):
            errors["client_ref"] = ["A string of at most 200 characters."]
        elif client_ref is not None and "\x00" in client_ref:  # PostgreSQL refuses NUL in text: a 500 otherwise
            errors["client_ref"] = ["Null characters are not allowed."]
        images = self.photos(data)
        if not images:
            errors[photos] = [f"Send 1 to {MAX_BATCH_IMAGES} {'`image` parts' if photos == 'image' else 'URLs'}."]
        elif len(images) > MAX_BATCH_IMAGES:
            errors[photos] = [f"A batch holds at most {MAX_BATCH_IMAGES} photos; this one has {len(images)}. "
                              "Split it into several batches."]
        if errors:
            raise serializers.ValidationError(errors)
        parts: list[BatchPart] = []
        for index, image in enumerate(images):
            part = f"{photos}[{index}]"
            if photos == "image" and not hasattr(image, "read"):
                errors[part] = ["Not a file: send each photo as a file part."]
                continue
            if photos == "image_urls" and not isinstance(image, str):
                errors[part] = ["Not a URL: send each photo's URL as a string."]
                continue
            source_name = str(getattr(image, "name", "") or "") if photos == "image" else _url_name(image)
            one = TaskCreateSerializer(data={**shared, ("image" if photos == "image" else "image_url"): image})
            if not one.is_valid():
                for field, messages in one.errors.items():
                    if field in ("image", "image_url", "hint_box"):  # about this photo
                        errors[part] = [f"{source_name or 'photo'}: {m}" for m in messages]
                    else:  # about the shared options: the same for every part
                        errors.setdefault(field, [str(m) for m in messages])
                continue
            checked = one.checked_upload
            parts.append(BatchPart(
                file=one.validated_data.get("image"), content_type=checked.content_type if checked else "",
                options=one.validated_data["options"], source_name=source_name,
                image_url=one.validated_data.get("image_url"), expires_in=one.validated_data.get("expires_in"),
            ))
        if errors:
            raise serializers.ValidationError(errors)
        return {"parts": parts, "options": parts[0].options, "client_ref": client_ref}

    def photos(self, data: Any) -> list[Any]:
        return data.getlist("image") if hasattr(data, "getlist") else []


class BatchURLsCreateSerializer(BatchCreateSerializer):
    """``POST /api/batches/`` as JSON: ``{"image_urls": [...], ...the task options}``."""

    photos_field = "image_urls"

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        del fields["image"]
        return {
            "image_urls": serializers.ListField(
                child=serializers.CharField(max_length=2048), min_length=1, max_length=MAX_BATCH_IMAGES,
                help_text=f"1 to {MAX_BATCH_IMAGES} photo URLs, each checked as image_url of POST /api/tasks/",
            ),
            **fields,
        }

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        # A JSON body may carry ``outputs`` and ``presets`` as the lists themselves, where a
        # form can only send their text (docs/api.md, "Batches"): each photo is checked as a
        # form submit is, so a list becomes the text a form would have sent.
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("outputs"), list):
                data["outputs"] = json.dumps(data["outputs"])
            presets = data.get("presets")
            if isinstance(presets, list) and all(isinstance(p, str) for p in presets):
                data["presets"] = ",".join(presets)
        return super().to_internal_value(data)

    def photos(self, data: Any) -> list[Any]:
        urls = data.get("image_urls") if isinstance(data, dict) else None
        return urls if isinstance(urls, list) else []


def _url_name(url: Any) -> str:
    """The file name at the end of a URL's path (for archive names), or ""."""
    try:
        return PurePosixPath(urlsplit(str(url)).path).name
    except ValueError:
        return ""


def request_fingerprint(data: Any) -> str:
    """SHA-256 of a batch request as sent: every field, every photo's name and bytes, in order.
    The same request sent again has the same one; another file or option does not."""
    digest = hashlib.sha256()
    for name in sorted(data):
        values = data.getlist(name) if hasattr(data, "getlist") else [data[name]]
        for value in values:
            digest.update(name.encode() + b"\0")
            if hasattr(value, "chunks"):
                digest.update(str(value.name).encode() + b"\0")
                for chunk in value.chunks():
                    digest.update(chunk)
                value.seek(0)
            else:
                digest.update(str(value).encode())
            digest.update(b"\0")
    return digest.hexdigest()


class BatchCountsSerializer(serializers.Serializer):
    pending = serializers.IntegerField()
    processing = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField()


class BatchSerializer(serializers.Serializer):
    """The batch JSON: ``Batch.live_state()``. The fields declared here only describe it in the schema."""

    id = serializers.IntegerField(read_only=True)
    status = serializers.ChoiceField(choices=Batch.Status.choices, read_only=True,
                                     help_text="pending: nothing started; processing: under way; completed: every "
                                     "task finished; canceled: every task finished after a cancel")
    counts = BatchCountsSerializer(read_only=True, help_text="the batch's tasks by status")
    total = serializers.IntegerField(read_only=True, help_text="how many tasks the batch has")
    progress = serializers.IntegerField(read_only=True, min_value=0, max_value=100,
                                        help_text="percent of its tasks finished")
    tasks = serializers.ListField(child=serializers.IntegerField(), read_only=True,
                                  help_text="the task ids, in the order of the image parts")
    options = serializers.DictField(read_only=True, help_text="the shared options, as the tasks hold them")
    client_ref = serializers.CharField(read_only=True, allow_null=True)
    archive_url = serializers.CharField(read_only=True, help_text="path of the ZIP archive")
    created_at = serializers.DateTimeField(read_only=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, batch: Batch) -> dict[str, Any]:
        return batch.live_state(task_ids=sorted(task.pk for task in batch.tasks.all()))
