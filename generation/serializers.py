"""Task input validation and output shape (the task JSON of docs/api.md)."""
from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from rest_framework import serializers

from imagegen_site.urlguard import ForbiddenURL, check_url

from .engine import InvalidOptions
from .engine.spec import JobSpec, parse_job
from .engine.upload import CheckedUpload, UploadRejected, check_upload
from .errors import ErrorCode
from .models import GenerationTask

OPTION_FIELDS = ("preset", "size", "format", "margin", "background", "fit", "shadow", "hint_box", "outputs", "presets")


class TaskCreateSerializer(serializers.Serializer):
    image = serializers.FileField(required=False, allow_empty_file=True,
                                  help_text="JPEG, PNG, WebP or HEIC product photo: each side at least 64 pixels "
                                  "(IMAGEGEN_MIN_SIDE), at most 20 MiB and 40 megapixels by default. "
                                  "Exactly one of image and image_url")
    preset = serializers.CharField(required=False, help_text="amazon (default), walmart, shopify, etsy, ebay, taobao, jd, "
                                   "pinduoduo, zalando, mercadolibre, google, lazada, tiktok, temu")
    size = serializers.CharField(required=False, help_text="canvas side in pixels, within the preset's range")
    format = serializers.CharField(required=False, help_text="jpeg, png or webp (where the preset allows)")
    margin = serializers.CharField(required=False, help_text="margin override in percent of the canvas")
    background = serializers.CharField(
        required=False, help_text="white (default) or transparent (PNG or WebP with an alpha channel)"
    )
    fit = serializers.CharField(
        required=False,
        help_text="preset (default): centred on the preset's canvas; original: the photo's own size, product in place",
    )
    shadow = serializers.CharField(
        required=False,
        help_text="remove (default): cast shadows removed, the product's own shading kept; "
        "keep: the photo's contact shadow kept on white; soft: a soft synthetic shadow",
    )
    hint_box = serializers.CharField(
        required=False,
        help_text="x0,y0,x1,y1: a box around the product, in pixels of the photo as displayed (after EXIF rotation)",
    )

    # Several outputs (docs/api.md, "Several outputs"): the fields above are every output's defaults.
    outputs = serializers.CharField(
        required=False, allow_blank=True,
        help_text='a JSON list (at most 8) of objects with any of preset, size, format, margin, background, fit, '
        'shadow and an optional name, e.g. [{"preset": "amazon"}, {"preset": "taobao", "name": "tb"}]',
    )
    presets = serializers.CharField(required=False, allow_blank=True, help_text="amazon,taobao: one output per preset")

    # --- intake: client_ref, expires_in, image_url (docs/api.md, "Task options") ---
    client_ref = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                       help_text="your own reference (e.g. a SKU), echoed in the task and its events")
    expires_in = serializers.IntegerField(required=False, min_value=1, max_value=86400,
                                          help_text="seconds: a task not started by then ends canceled (expired)")
    image_url = serializers.CharField(
        required=False, max_length=2048,
        help_text="an https:// URL of the photo, fetched by a worker with the upload limits, instead of image",
    )

    def validate_image_url(self, url: str) -> str:
        try:
            check_url(url)
        except ForbiddenURL as exc:
            raise serializers.ValidationError(f"The URL cannot be fetched: {exc}.") from None
        return url

    def validate_image(self, image: UploadedFile) -> UploadedFile:
        limit = settings.IMAGEGEN_MAX_UPLOAD_BYTES
        if image.size is not None and image.size > limit:
            raise serializers.ValidationError(f"The file is {image.size} bytes; the limit is {limit} bytes.")
        data = image.read()
        image.seek(0)
        try:
            checked = check_upload(
                data, max_bytes=limit, max_pixels=settings.IMAGEGEN_MAX_PIXELS, min_side=settings.IMAGEGEN_MIN_SIDE
            )
        except UploadRejected as exc:
            raise serializers.ValidationError(exc.message, code=exc.code) from None
        image.checked = checked  # type: ignore[attr-defined]
        image.name = f"input.{checked.extension}"  # never the client's filename
        return image

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        raw = {key: attrs[key] for key in OPTION_FIELDS if key in attrs}
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            allowed = ", ".join(self.fields)
            raise serializers.ValidationError({name: [f"Unknown field {name!r}; the fields are {allowed}."] for name in unknown})
        # A form repeats a field silently and DRF keeps the last value: two `image` parts would
        # make one task of the second photo, two `preset`s one of the last. Refuse, as batches do.
        getlist = getattr(self.initial_data, "getlist", None)
        repeated = sorted(name for name in self.initial_data if getlist and len(getlist(name)) > 1)
        if repeated:
            raise serializers.ValidationError({
                name: ["Give this field once (one photo per task: POST /api/batches/ takes several)."
                       if name == "image" else "Give this field once."] for name in repeated
            })
        if ("image" in attrs) == ("image_url" in attrs):
            given = "both" if "image" in attrs else "neither"
            raise serializers.ValidationError({"image": [f"Send exactly one of image and image_url ({given} was sent)."]})
        checked: CheckedUpload | None = attrs["image"].checked if "image" in attrs else None
        try:
            # hint_box is bounded by the photo as displayed, which only the upload check knows
            # (for an image_url, the worker checks it once the photo is fetched).
            job: JobSpec = parse_job(raw, image_size=(checked.width, checked.height) if checked else None)
        except InvalidOptions as exc:
            raise serializers.ValidationError({exc.field: [str(exc)]}) from None
        attrs["options"] = job.to_options()
        attrs["client_ref"] = attrs.get("client_ref") or None
        return attrs

    @property
    def fingerprint(self) -> str:
        """What an Idempotency-Key repeat must match: the input (its bytes' or its URL's
        digest) and every option that shapes the task, in canonical form."""
        data = self.validated_data
        if "image" in data:
            image = data["image"]
            digest = hashlib.sha256(image.read()).hexdigest()
            image.seek(0)
        else:
            digest = hashlib.sha256(("url:" + data["image_url"]).encode()).hexdigest()
        return GenerationTask.fingerprint(digest, options=data["options"], client_ref=data["client_ref"],
                                          expires_in=data.get("expires_in"))

    @property
    def checked_upload(self) -> CheckedUpload | None:
        image = self.validated_data.get("image")
        return image.checked if image is not None else None


class IdempotencyReusedSerializer(serializers.Serializer):
    """The 422 of a reused Idempotency-Key (schema only)."""

    detail = serializers.CharField()
    code = serializers.ChoiceField(choices=["idempotency_key_reused"])


class EngineSerializer(serializers.Serializer):
    """Provenance of a completed task's result: which engine and model made it."""

    backend = serializers.CharField(help_text="local, gemini, or the operator's backend")
    segmenter = serializers.CharField(allow_null=True, help_text="u2netp, classical, or the operator's model file")
    model = serializers.CharField(allow_null=True, help_text="model file name (null for the classical segmenter)")
    model_sha256 = serializers.CharField(allow_null=True, help_text="SHA-256 of the model file")
    version = serializers.CharField(help_text="engine version")


class OutputSerializer(serializers.Serializer):
    """One rendered output of a completed task."""

    name = serializers.CharField(help_text="unique in the task; ?output=NAME on the result")
    preset = serializers.CharField()
    format = serializers.CharField(help_text="jpeg, png or webp")
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    bytes = serializers.IntegerField()
    url = serializers.CharField(help_text="path of the owner-only download")
    compliance = serializers.JSONField(allow_null=True, help_text="this output's compliance report")


class TaskSerializer(serializers.ModelSerializer):
    """The task JSON: ``GenerationTask.live_state()``, which events carry too. The fields
    declared here only describe it in the OpenAPI schema."""

    queue_position = serializers.IntegerField(read_only=True, allow_null=True)
    estimated_remaining_seconds = serializers.IntegerField(read_only=True, allow_null=True)
    needs_review = serializers.BooleanField(
        read_only=True, help_text="the engine judged that a person should look at the cut-out"
    )
    engine = EngineSerializer(read_only=True, allow_null=True, help_text="null until completed")
    outputs = OutputSerializer(many=True, read_only=True, help_text="every output, in order; empty until completed")
    elapsed_time = serializers.FloatField(read_only=True, allow_null=True)
    input_image_url = serializers.CharField(
        read_only=True, allow_null=True,
        help_text="path of the owner-only download; null for an image_url task until its photo is fetched",
    )
    client_ref = serializers.CharField(read_only=True, allow_null=True, help_text="the client_ref sent at submit")
    expires_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="expires_in's deadline: not started by then, the task is canceled"
    )
    image_url = serializers.CharField(read_only=True, allow_null=True, help_text="where the photo is fetched from")
    result_image_url = serializers.CharField(
        read_only=True, allow_null=True, help_text="path of the owner-only download, once completed"
    )
    # The enum, so the schema lists every code a client may meet.
    error_code = serializers.ChoiceField(choices=ErrorCode.choices, allow_null=True, read_only=True)

    class Meta:
        model = GenerationTask
        fields = list(GenerationTask.LIVE_FIELDS)
        read_only_fields = fields

    def to_representation(self, task: GenerationTask) -> dict[str, Any]:
        return task.live_state()
