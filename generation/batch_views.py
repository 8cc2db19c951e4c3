"""REST endpoints for batches: they speak HTTP and call model methods, nothing more."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import TooManyFilesSent
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Prefetch
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from imagegen_site.parsers import JSONParser

from . import archive
from .batch_serializers import BatchCreateSerializer, BatchSerializer, BatchURLsCreateSerializer, request_fingerprint
from .exceptions import Conflict
from .serializers import IdempotencyReusedSerializer
from .intake import IDEMPOTENCY_HEADER, IdempotencyKeyReused, SubmitIntake
from .models import MAX_BATCH_IMAGES, Batch, GenerationTask, InvalidTransition
from .pagination import SnapshotList
from .views import DownloadNegotiation, SubmitThrottle

_END = object()


async def _in_threads(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Hand a blocking iterator (storage reads) to the ASGI server chunk by chunk, each
    read in a pool thread: Django would otherwise collect a sync iterator into a list
    first, the whole archive in memory."""
    step = sync_to_async(next, thread_sensitive=False)
    while (chunk := await step(chunks, _END)) is not _END:
        yield chunk  # type: ignore[misc]


@extend_schema_view(
    list=extend_schema(summary="The caller's batches, newest first"),
    retrieve=extend_schema(summary="One of the caller's batches"),
)
class BatchViewSet(SubmitIntake, SnapshotList, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = BatchSerializer
    # Only for the schema generator (the id's type); requests always go through get_queryset.
    queryset = Batch.objects.none()
    throttle_classes = [*viewsets.GenericViewSet.throttle_classes, SubmitThrottle]

    def get_queryset(self) -> Any:
        ids_only = GenerationTask.objects.order_by("id").only("id", "batch_id")
        return Batch.objects.for_user(self.request.user).prefetch_related(Prefetch("tasks", queryset=ids_only))

    def get_parsers(self) -> list:
        if getattr(self, "action", None) == "create" or self.request is None:
            return [MultiPartParser(), JSONParser()]
        return super().get_parsers()

    @extend_schema(
        summary="Submit up to 100 product photos as one batch",
        description="Each `image` part is checked as `POST /api/tasks/` checks its photo, and the task options "
        "are shared by all. Any bad part makes the whole request a 400 whose `errors` name each bad part "
        "(`image[0]` is the first), and nothing is created.",
        request={"multipart/form-data": BatchCreateSerializer, "application/json": BatchURLsCreateSerializer},
        parameters=[OpenApiParameter(IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER,
                                     description="a repeat with the same key returns the first batch (200)")],
        responses={201: BatchSerializer, 200: BatchSerializer,
                   422: OpenApiResponse(IdempotencyReusedSerializer,
                                        description="the Idempotency-Key was used with other photos or options"),
                   429: OpenApiResponse(description="throttled, or the batch's photos would pass the daily task "
                                                    "quota (`code: quota_exceeded`; Retry-After)"),
                   503: OpenApiResponse(description="intake paused by the operators (Retry-After)")},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = self.open_intake(request)
        try:
            data = request.data
        except TooManyFilesSent:
            # Django stops reading the body at DATA_UPLOAD_MAX_NUMBER_FILES (100, the batch
            # limit) with a SuspiciousOperation, which would be an HTML 400.
            raise ValidationError(
                {"image": [f"A batch holds at most {MAX_BATCH_IMAGES} photos. Split it into several batches."]}
            ) from None
        if not hasattr(data, "getlist") and not isinstance(data, dict):
            raise ValidationError({"image_urls": ["Send a JSON object: {\"image_urls\": [...], ...options}."]})
        fingerprint = request_fingerprint(data) if key is not None else ""
        if key is not None:
            earlier = self.get_queryset().filter(idempotency_key=key).first()
            if earlier is not None:
                return self._repeat(earlier, fingerprint)
        creator = BatchCreateSerializer if hasattr(data, "getlist") else BatchURLsCreateSerializer
        serializer = creator(data=data)
        serializer.is_valid(raise_exception=True)
        batch, created = Batch.submit(user=request.user, idempotency_key=key, fingerprint=fingerprint,
                                      **serializer.validated_data)
        if not created:  # an identical request raced this one and won
            return self._repeat(batch, fingerprint)
        body = self.get_serializer(batch).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": f"/api/batches/{batch.pk}/"})

    def _repeat(self, earlier: Batch, fingerprint: str) -> Response:
        """A repeated Idempotency-Key: the first batch (200) if the request is the same one."""
        if earlier.fingerprint and earlier.fingerprint != fingerprint:
            raise IdempotencyKeyReused("batch", earlier.pk, "other photos")
        return Response(self.get_serializer(earlier).data, status=status.HTTP_200_OK)

    @extend_schema(
        summary="Cancel a batch's unfinished tasks",
        request=None,
        responses={200: BatchSerializer, 409: OpenApiResponse(description="every task already finished")},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        batch = self.get_object()
        try:
            batch.cancel()
        except InvalidTransition as exc:
            raise Conflict(str(exc).capitalize() + ".") from None
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        summary="A ZIP of the batch's completed outputs and its manifest.csv",
        description="Every completed output so far, named after its photo's file name (sanitised, made unique), "
        "plus `manifest.csv`: one row per output (or per task without one) with file, task_id, source, "
        "client_ref, status, error_code, error, output, passed, needs_review.",
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer], content_negotiation_class=DownloadNegotiation)
    def archive(self, request: Request, pk: str | None = None) -> StreamingHttpResponse:
        batch = self.get_object()
        zipped = archive.stream(batch)
        chunks: Iterator[bytes] = iter(zipped)
        asynchronous = isinstance(request._request, ASGIRequest)
        response = StreamingHttpResponse(_in_threads(chunks) if asynchronous else chunks,
                                         content_type="application/zip")
        response["Content-Length"] = str(len(zipped))
        response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}.zip"'
        response["Cache-Control"] = "private, no-store"  # it grows while the batch runs
        response["X-Content-Type-Options"] = "nosniff"
        return response
