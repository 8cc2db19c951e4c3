from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response


class TaskPagination(PageNumberPagination):
    """Page-number pagination of task lists. The realtime side extends it with the
    snapshot's ``last_seq`` (``notifications.pagination``, set as the default in settings)."""

    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int | None:
        # DRF quietly falls back to the default for a bad page_size: a client asking
        # for 500 or "ten" should learn that it did not get what it asked for.
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= self.max_page_size):
            raise ValidationError({self.page_size_query_param: f"An integer from 1 to {self.max_page_size}."})
        return int(raw)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size, default=self.page_size)
                parameter["description"] = f"Results per page, 1-{self.max_page_size}; outside that, a 400."
        return parameters


class SnapshotList:
    """A list view whose page and what the paginator adds to it (the caller's ``last_seq``,
    see ``TaskPagination``) describe one snapshot: on PostgreSQL both are read in one
    REPEATABLE READ transaction. Put it before the DRF list mixin."""

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return super().list(request, *args, **kwargs)  # type: ignore[misc]
        return super().list(request, *args, **kwargs)  # type: ignore[misc]
