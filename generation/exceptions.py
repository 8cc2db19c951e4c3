"""API errors as docs/api.md describes them: ``{"detail": "..."}`` with a 4xx, never a 500 for bad input."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The task is not in a state that allows this."
    default_code = "conflict"


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            message = _first_message(value)
            return message if field in ("non_field_errors", "detail") else f"{field}: {message}"
    if isinstance(detail, (list, tuple)) and detail:
        return _first_message(detail[0])
    return str(detail)


def _request_too_large(exc: Exception) -> str | None:
    """What Django refused while reading the body, or None. Django raises these as a
    SuspiciousOperation, which it would answer with its HTML 400 page."""
    if isinstance(exc, RequestDataTooBig):
        return f"The request body is larger than the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
    if isinstance(exc, TooManyFieldsSent):
        return f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields."
    if isinstance(exc, TooManyFilesSent):
        return f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files."
    return None


def json_exception_handler(exc: Exception, context: dict) -> Response | None:
    too_large = _request_too_large(exc)
    if too_large is not None:
        return Response({"detail": too_large}, status=status.HTTP_400_BAD_REQUEST)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        # Keep DRF's per-field detail under "errors" for clients that want it.
        response.data = {"detail": _first_message(exc.detail), "errors": exc.detail}
    elif isinstance(response.data, dict) and "detail" not in response.data:
        response.data = {"detail": _first_message(response.data), "errors": response.data}
    elif isinstance(response.data, list):
        response.data = {"detail": _first_message(response.data)}
    return response
