"""The staff-only REST endpoint ``GET /api/queue/stats/``: it reads ``generation.stats``, changes nothing."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import stats


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
        # Staff only: 403 for everyone else, signed in or not (docs/api.md).
        raise PermissionDenied("Queue statistics are for staff users only.")
