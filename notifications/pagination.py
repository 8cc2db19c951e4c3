"""Task pages that carry the caller's ``last_seq``, so a client can list, then connect
with ``after=last_seq`` and miss nothing. The default pagination class (settings)."""
from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from generation.pagination import TaskPagination

from .models import EventCounter


class SnapshotPagination(TaskPagination):
    """``TaskPagination`` plus ``last_seq``: the caller's newest event seq at the moment of the page."""

    last_seq = 0

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list | None:
        # Read before the page. The task list reads both in one REPEATABLE READ
        # transaction on PostgreSQL; elsewhere a change racing the page is at worst
        # replayed again after last_seq, never missed.
        self.last_seq = EventCounter.last_seq_for(request.user.pk)
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data: Any) -> Response:
        response = super().get_paginated_response(data)
        response.data["last_seq"] = self.last_seq
        return response

    def get_paginated_response_schema(self, schema: dict) -> dict:
        result = super().get_paginated_response_schema(schema)
        result["properties"]["last_seq"] = {"type": "integer", "example": 42}
        return result
