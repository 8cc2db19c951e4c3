"""``GET /api/account/``: who the caller is, what they used and what they may use."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import DailyUsage, GenerationTask
from .models.usage import next_utc_midnight


class UsageSerializer(serializers.Serializer):
    today = serializers.IntegerField(help_text="tasks created since 00:00 UTC")
    this_month = serializers.IntegerField(help_text="tasks created since the 1st of this month, 00:00 UTC")
    resets_at = serializers.DateTimeField(help_text="the next 00:00 UTC, when `today` starts again from 0")


class LimitsSerializer(serializers.Serializer):
    daily_tasks = serializers.IntegerField(allow_null=True, help_text="IMAGEGEN_DAILY_TASKS_PER_USER; null: unlimited")
    max_running = serializers.IntegerField(
        allow_null=True, help_text="IMAGEGEN_MAX_RUNNING_PER_USER: the caller's tasks processing at once; null: unlimited"
    )
    max_upload_bytes = serializers.IntegerField()
    max_pixels = serializers.IntegerField()


class AccountSerializer(serializers.Serializer):
    username = serializers.CharField()
    usage = UsageSerializer()
    limits = LimitsSerializer()
    pending = serializers.IntegerField(help_text="the caller's tasks waiting in the queue")
    processing = serializers.IntegerField(help_text="the caller's tasks being worked on now")


class AccountView(APIView):
    @extend_schema(summary="The caller's account: usage against the quotas, tasks in the queue",
                   responses={200: AccountSerializer})
    def get(self, request: Request) -> Response:
        now = timezone.now()
        usage = DailyUsage.usage_for(request.user, now)
        counts = GenerationTask.objects.for_user(request.user).aggregate(
            pending=Count("id", filter=Q(status=GenerationTask.Status.PENDING)),
            processing=Count("id", filter=Q(status=GenerationTask.Status.PROCESSING)),
        )
        body: dict[str, Any] = {
            "username": request.user.get_username(),
            "usage": {"today": usage.today, "this_month": usage.this_month, "resets_at": next_utc_midnight(now)},
            "limits": {
                "daily_tasks": settings.IMAGEGEN_DAILY_TASKS_PER_USER,
                # The fair-sharing cap is the queue's setting; absent in a build without it.
                "max_running": getattr(settings, "IMAGEGEN_MAX_RUNNING_PER_USER", None) or None,
                "max_upload_bytes": settings.IMAGEGEN_MAX_UPLOAD_BYTES,
                "max_pixels": settings.IMAGEGEN_MAX_PIXELS,
            },
            "pending": counts["pending"],
            "processing": counts["processing"],
        }
        return Response(AccountSerializer(body).data)
