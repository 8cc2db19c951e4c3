"""Intake as the API sees it: a paused queue refuses submissions with a 503, a spent quota with a 429."""
from __future__ import annotations

from django.conf import settings
from rest_framework import status
from rest_framework.response import Response

from .models import QueueControl, QuotaExceeded


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


def quota_exceeded_response(exc: QuotaExceeded) -> Response:
    """The 429 of a submit over ``IMAGEGEN_DAILY_TASKS_PER_USER``: nothing was created."""
    response = Response(
        {"detail": str(exc), "code": "quota_exceeded"},
        status=status.HTTP_429_TOO_MANY_REQUESTS,
        headers={"Retry-After": str(exc.retry_after)},
    )
    response._has_been_logged = True  # type: ignore[attr-defined]  # the user's limit, not a server fault
    return response
