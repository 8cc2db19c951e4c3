"""REST endpoints for tasks: they speak HTTP and call model methods, nothing more."""
from __future__ import annotations

from typing import Any

from django.utils import timezone
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from imagegen_site.throttling import ScopedThrottle

from .exceptions import Conflict
from .files import file_response
from .intake import IDEMPOTENCY_HEADER, IdempotencyKeyReused, SubmitIntake
from .pagination import SnapshotList
from .models import DailyUsage, GenerationTask, InvalidTransition
from .models import IdempotencyKeyReused as TaskKeyReused
from .serializers import IdempotencyReusedSerializer, TaskCreateSerializer, TaskSerializer
from .waiting import PREFER_HEADER, parse_prefer_wait

# With shared object storage (STORAGE_URL) a download is a redirect to the store.
PRESIGNED = OpenApiResponse(description="with shared object storage: `Location` is a presigned link "
                                        "to the file, valid for a few minutes")
_BOOLEANS = {"true": True, "false": False}


class DownloadNegotiation(BaseContentNegotiation):
    """Image downloads ignore ``Accept`` (a browser asks for ``image/*``); their errors render as JSON."""

    def select_parser(self, request: Request, parsers: list) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list, format_suffix: str | None = None) -> tuple:
        return renderers[0], renderers[0].media_type


class SubmitThrottle(ScopedThrottle):
    scope_attr = "throttle_scope"

    def allow_request(self, request: Request, view: Any) -> bool:
        if getattr(view, "action", None) != "create":
            return True
        view.throttle_scope = "submit"
        return super().allow_request(request, view)


@extend_schema_view(
    list=extend_schema(
        summary="The caller's tasks, newest first",
        parameters=[
            OpenApiParameter("status", str, enum=GenerationTask.Status.values),
            OpenApiParameter("needs_review", str, enum=list(_BOOLEANS),
                             description="only tasks the engine flagged for a person's look (true) or not (false)"),
            OpenApiParameter("client_ref", str, description="only tasks submitted with this client_ref"),
        ],
    ),
    retrieve=extend_schema(summary="One of the caller's tasks"),
)
class TaskViewSet(SubmitIntake, SnapshotList, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = TaskSerializer
    # Only for the schema generator (the id's type); requests always go through get_queryset.
    queryset = GenerationTask.objects.none()
    throttle_classes = [*viewsets.GenericViewSet.throttle_classes, SubmitThrottle]

    def get_queryset(self) -> Any:
        tasks = GenerationTask.objects.for_user(self.request.user).select_related(None)
        if self.action in ("list", "retrieve"):
            tasks = tasks.prefetch_related("outputs")  # the task JSON lists them: one query per page
        if self.action == "list":
            wanted = self.request.query_params.get("status")
            if wanted:
                if wanted not in GenerationTask.Status.values:
                    raise ValidationError({"status": f"Unknown status {wanted!r}; one of {', '.join(GenerationTask.Status.values)}."})
                tasks = tasks.filter(status=wanted)
            client_ref = self.request.query_params.get("client_ref")
            if client_ref is not None:  # intake: the caller's own reference (a SKU)
                if "\x00" in client_ref:  # PostgreSQL refuses NUL in a text parameter: a 500 otherwise
                    raise ValidationError({"client_ref": "Null characters are not allowed."})
                tasks = tasks.filter(client_ref=client_ref)
            review = self.request.query_params.get("needs_review")
            if review is not None:
                if review not in _BOOLEANS:
                    raise ValidationError({"needs_review": f"Expected true or false, not {review!r}."})
                tasks = tasks.filter(needs_review=_BOOLEANS[review])
        return tasks

    @extend_schema(
        summary="Submit a product photo",
        request={"multipart/form-data": TaskCreateSerializer},
        parameters=[
            OpenApiParameter(IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER,
                             description="a repeat with the same key returns the first task (200); "
                             "the same key with another file or other options is a 422"),
            OpenApiParameter(PREFER_HEADER, str, OpenApiParameter.HEADER, pattern=r"^wait=([1-9]|[1-5][0-9]|60)$",
                             description="wait=N (1-60): answer when the task is finished or N seconds passed"),
        ],
        responses={201: TaskSerializer, 200: TaskSerializer,
                   422: OpenApiResponse(IdempotencyReusedSerializer,
                                        description="the Idempotency-Key was used with another file or other options"),
                   429: OpenApiResponse(description="throttled, or the daily task quota is spent "
                                                    "(`code: quota_exceeded`; Retry-After: seconds to 00:00 UTC)"),
                   503: OpenApiResponse(description="intake paused by the operators (Retry-After)")},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = self.open_intake(request)
        try:
            parse_prefer_wait(request.headers.get(PREFER_HEADER))  # the wait itself: generation.waiting
        except ValueError as exc:
            raise ValidationError({PREFER_HEADER: str(exc)}) from None
        if key is None:  # a repeat of a key is no new task: submit checks the quota after looking it up
            DailyUsage.check_quota(request.user, timezone.now())  # before the upload is decoded
        serializer = TaskCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        checked = serializer.checked_upload
        try:
            task, created = GenerationTask.submit(
                user=request.user,
                image=data.get("image"),
                content_type=checked.content_type if checked else "",
                options=data["options"],
                idempotency_key=key,
                client_ref=data["client_ref"],
                expires_in=data.get("expires_in"),
                image_url=data.get("image_url"),
                fingerprint=serializer.fingerprint,
            )
        except TaskKeyReused as exc:
            raise IdempotencyKeyReused("task", exc.task.pk, "another file") from None
        body = self.get_serializer(task).data
        if not created:
            return Response(body, status=status.HTTP_200_OK)
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": f"/api/tasks/{task.pk}/"})

    def get_parsers(self) -> list:
        if getattr(self, "action", None) == "create" or self.request is None:
            return [MultiPartParser()]
        return super().get_parsers()

    @extend_schema(request=None, responses={200: TaskSerializer, 409: OpenApiResponse(description="finished")})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        return self._transition(GenerationTask.cancel)

    @extend_schema(request=None, responses={200: TaskSerializer, 409: OpenApiResponse(description="not failed or canceled")})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        return self._transition(GenerationTask.retry)

    def _transition(self, method: Any) -> Response:
        task = self.get_object()
        try:
            method(task)
        except InvalidTransition as exc:
            raise Conflict(str(exc).capitalize() + ".") from None
        except GenerationTask.DoesNotExist:  # purged by retention between the read and the lock
            raise NotFound("No GenerationTask matches the given query.") from None
        return Response(self.get_serializer(task).data)

    @extend_schema(
        summary="One output of a completed task (default the first)",
        parameters=[OpenApiParameter("output", str, description="an output's name, or its index from 0 (default 0)")],
        responses={(200, "image/*"): OpenApiTypes.BINARY, 302: PRESIGNED,
                   404: OpenApiResponse(description="not completed, or no such output (the answer names it)")},
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer], content_negotiation_class=DownloadNegotiation)
    def result(self, request: Request, pk: str | None = None) -> HttpResponse:
        task = self.get_object()
        if task.status != GenerationTask.Status.COMPLETED or not task.result_image:
            raise NotFound(f"The result is not ready: the task is {task.status}.")
        wanted = request.query_params.get("output", "").strip()
        output = task.output(wanted)
        if output is None:
            names = ", ".join(o.name for o in task.rendered_outputs())
            raise NotFound(f"This task has no output {wanted!r}; its outputs are {names} (or an index from 0).")
        stem = f"task-{task.pk}-result" if output.index == 0 and not wanted else f"task-{task.pk}-{output.name}"
        return self._file(output.file, output.content_type, stem)

    @extend_schema(
        summary="The product mask of a completed task",
        description="An 8-bit greyscale PNG at the input photo's resolution (after EXIF rotation): "
        "255 is product, 0 is background, values between are the soft edge.",
        responses={(200, "image/png"): OpenApiTypes.BINARY, 302: PRESIGNED,
                   404: OpenApiResponse(description="not completed, no mask, or not the caller's task")},
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer], content_negotiation_class=DownloadNegotiation)
    def mask(self, request: Request, pk: str | None = None) -> HttpResponse:
        task = self.get_object()
        if task.status != GenerationTask.Status.COMPLETED:
            raise NotFound(f"The mask is not ready: the task is {task.status}.")
        if not task.mask_image:
            raise NotFound("This task's engine made no product mask.")
        return self._file(task.mask_image, "image/png", f"task-{task.pk}-mask")

    @extend_schema(responses={(200, "image/*"): OpenApiTypes.BINARY, 302: PRESIGNED})
    @action(detail=True, methods=["get"], url_path="input", renderer_classes=[JSONRenderer], content_negotiation_class=DownloadNegotiation)
    def input(self, request: Request, pk: str | None = None) -> HttpResponse:
        task = self.get_object()
        if not task.input_image:
            raise NotFound("The photo has not been fetched from its image_url yet.")
        return self._file(task.input_image, task.input_content_type, f"task-{task.pk}-input")

    def _file(self, field: Any, content_type: str, stem: str) -> HttpResponse:
        # Local file or presigned redirect to the shared store: one helper for every download.
        extension = field.name.rsplit(".", 1)[-1]
        return file_response(self.request, field, content_type, f"{stem}.{extension}")
