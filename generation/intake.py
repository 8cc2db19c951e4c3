"""Intake as the API sees it, shared by ``POST /api/tasks/`` and ``POST /api/batches/``.

Both submits open the same way: a paused queue refuses them with a 503, the
``Idempotency-Key`` header is read and bounded, a spent quota is a 429, and a key
reused for another request is a 422. ``SubmitIntake`` holds that preamble once,
for both viewsets; what differs (how a repeat is recognised) stays with each.
"""
from __future__ import annotations

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from .models import QueueControl, QuotaExceeded

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255


class IntakeRefused(Exception):
    """The queue refuses submissions now; ``response`` is the answer (already built)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.data)
        self.response = response


class IdempotencyKeyReused(APIException):
    """The 422 of a key its owner already used for another request: nothing is created."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"

    def __init__(self, kind: str, pk: int, inputs: str) -> None:
        message = (f"This Idempotency-Key was already used for {kind} {pk} with {inputs} or other options; "
                   f"use a new key for a new {kind}.")
        super().__init__(message)
        # The body of docs/api.md: the code beside the detail, not DRF's bare {"detail"}.
        self.detail = {"detail": message, "code": self.default_code}  # type: ignore[assignment]


def intake_paused_response() -> Response | None:
    """A 503 for a submit while intake is paused, else None."""
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


class SubmitIntake:
    """Mixin for a viewset whose ``create`` submits work: call ``open_intake`` first.

    A refusal raised anywhere in the view (the paused queue, a spent quota from the
    early check or from the model's counted insert) becomes its answer here, so each
    ``create`` reads as the happy path.
    """

    def open_intake(self, request: Request) -> str | None:
        """The request's Idempotency-Key (None without one), or raise the submit's refusal."""
        paused = intake_paused_response()  # operators paused intake: 503 + Retry-After, no row
        if paused is not None:
            raise IntakeRefused(paused)
        key = request.headers.get(IDEMPOTENCY_HEADER, "").strip() or None
        if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
            raise ValidationError({IDEMPOTENCY_HEADER: f"At most {MAX_IDEMPOTENCY_KEY} characters."})
        return key

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, IntakeRefused):
            return exc.response
        if isinstance(exc, QuotaExceeded):
            return quota_exceeded_response(exc)
        return super().handle_exception(exc)  # type: ignore[misc]
