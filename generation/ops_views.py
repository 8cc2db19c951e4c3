"""Operator views: queue statistics (JSON for staff, and the admin dashboard) and the
intake switch. They read ``generation.stats`` and change nothing but the switch."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import stats
from .models import GenerationTask, QueueControl

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin


class QueueStatsView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Queue statistics (staff only)",
        description="Counts by status, oldest pending age, throughput, failure rate and p50/p95 wait and run "
        "time over the last hour, live workers with their current tasks, open WebSocket connections.",
        responses={200: OpenApiTypes.OBJECT, 403: OpenApiResponse(description="not staff")},
    )
    def get(self, request: Request) -> Response:
        return Response(stats.queue_stats())

    def permission_denied(self, request: Request, message: str | None = None, code: str | None = None) -> None:
        # The contract: staff only, 403 for everyone else, signed in or not.
        raise PermissionDenied("Queue statistics are for staff users only.")


def intake_paused_response() -> Response | None:
    """A 503 for ``POST /api/tasks/`` while intake is paused, else None."""
    control = QueueControl.objects.filter(pk=1, intake_paused=True).first()
    if control is None:
        return None
    reason = f" ({control.intake_reason})" if control.intake_reason else ""
    response = Response(
        {"detail": f"Task submission is paused{reason}. Try again later."},
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(settings.IMAGEGEN_INTAKE_RETRY_AFTER)},
    )
    # An operator's decision, not a server error: skip django.request's ERROR line
    # per refused submission (Django's own flag for "already logged").
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def dashboard(request: HttpRequest, model_admin: ModelAdmin) -> HttpResponse:
    """The admin's queue dashboard (wrapped in ``admin_view`` by ``GenerationTaskAdmin``)."""
    if not model_admin.has_view_permission(request):
        return HttpResponse(status=403)
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "title": "Queue dashboard",
        "opts": GenerationTask._meta,
        "stats": stats.queue_stats(),
        "control": QueueControl.get(),
        "can_change": model_admin.has_change_permission(request),
        "refresh_seconds": 10,
    }
    return TemplateResponse(request, "admin/generation/dashboard.html", context)


@require_POST
def set_intake(request: HttpRequest, model_admin: ModelAdmin) -> HttpResponse:
    """Pause or resume task submission; logged in the admin's history like any change."""
    if not model_admin.has_change_permission(request):
        return HttpResponse(status=403)
    paused = request.POST.get("paused") == "1"
    reason = request.POST.get("reason", "").strip()
    control = QueueControl.get()
    control.set_intake(paused=paused, by=request.user.get_username(), reason=reason)
    message = f"Paused intake{': ' + reason if reason else ''}" if paused else "Resumed intake"
    LogEntry.objects.log_actions(
        user_id=request.user.pk, queryset=[control], action_flag=CHANGE, change_message=message, single_object=True
    )
    messages.success(request, message + ".")
    return HttpResponseRedirect(reverse("admin:generation_dashboard"))
