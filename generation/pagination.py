from __future__ import annotations

from rest_framework.pagination import PageNumberPagination


class TaskPagination(PageNumberPagination):
    """Page-number pagination of task lists. The realtime side extends it with the
    snapshot's ``last_seq`` (``notifications.pagination``, set as the default in settings)."""

    page_size_query_param = "page_size"
    max_page_size = 200
