from __future__ import annotations

from typing import Any

from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response


class TaskPagination(PageNumberPagination):
    """Page-number pagination that also reports the snapshot's ``last_seq``."""

    page_size_query_param = "page_size"
    max_page_size = 200

    def get_paginated_response(self, data: Any) -> Response:
        response = super().get_paginated_response(data)
        response.data["last_seq"] = getattr(self, "last_seq", 0)
        return response

    def get_paginated_response_schema(self, schema: dict) -> dict:
        result = super().get_paginated_response_schema(schema)
        result["properties"]["last_seq"] = {"type": "integer", "example": 42}
        return result
