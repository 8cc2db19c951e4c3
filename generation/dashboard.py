"""The admin's queue dashboard and its intake switch (wrapped in ``admin_view`` by
``GenerationTaskAdmin.get_urls``). They read ``generation.stats`` and change nothing
but the switch."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from . import stats
from .models import GenerationTask, QueueControl

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin


def dashboard(request: HttpRequest, model_admin: ModelAdmin) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        return HttpResponse(status=403)
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "title": "Queue dashboard",
        "opts": GenerationTask._meta,
        "stats": stats.queue_stats(),
        "realtime": stats.realtime_table(),
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
