"""Queue inspection in the Django admin.

Every action goes through the model's transition methods (so each change is one
event for the owner's clients) and is recorded in the admin's ``LogEntry``
history. Images are served by a staff-checked view here, never from public media.
"""
from __future__ import annotations

from typing import Any, Callable

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from notifications.models import Event

from . import batch_admin, dashboard, retention, thumbnails  # noqa: F401  (batch_admin registers BatchAdmin)
from .models import GenerationTask, InvalidTransition, QueueControl, WorkerProcess
from .work_admin import WorkAdmin

TIMELINE_LIMIT = 500
_IMAGE_HEADERS = {
    "Cache-Control": "private, max-age=3600",
    "X-Content-Type-Options": "nosniff",
    # User-supplied bytes on the admin's origin: never let them run as a document.
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


@admin.register(GenerationTask)
class GenerationTaskAdmin(WorkAdmin):
    list_display = (
        "id", "user", "status", "needs_review", "progress_bar", "attempts", "error_code", "worker_name",
        "created_at", "started_at", "finished_at", "duration", "input_thumb", "result_thumb",
    )
    list_filter = ("status", "needs_review", "error_code", "created_at", "finished_at", ("user", admin.RelatedOnlyFieldListFilter))
    search_fields = ("=id", "user__username", "client_ref")  # client_ref: intake
    search_help_text = "Task id, or the owner's username"
    date_hierarchy = "created_at"
    list_select_related = ("user", "worker")
    list_per_page = 50
    show_full_result_count = False  # COUNT(*) over a big queue on every page view is not worth it
    actions = ["retry_tasks", "cancel_tasks", "requeue_tasks"]
    change_list_template = "admin/generation/generationtask/change_list.html"
    fieldsets = (
        (None, {"fields": ("id", "user", "batch", "status", "progress_bar", "attempts", "max_attempts",
                           "error_code", "error_message")}),
        ("Images", {"fields": ("input_preview", "result_preview", "mask_preview", "outputs_table", "options", "compliance")}),
        ("Review and provenance", {"fields": ("needs_review", "review_reasons", "engine")}),
        ("Timing", {"fields": ("created_at", "run_after", "started_at", "finished_at", "updated_at", "duration")}),
        ("Claim", {"fields": ("worker", "claim_token", "priority", "idempotency_key")}),
        ("Event timeline", {"fields": ("timeline",)}),
    )
    readonly_fields = [
        *(f.name for f in GenerationTask._meta.fields),
        "progress_bar", "duration", "input_preview", "result_preview", "mask_preview", "outputs_table", "review_reasons",
        "timeline",
    ]

    # --- columns ----------------------------------------------------------------------
    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, task: GenerationTask) -> str:
        return format_html('<progress value="{}" max="100"></progress> {}%', task.progress, task.progress)

    @admin.display(description="worker", ordering="worker__name")
    def worker_name(self, task: GenerationTask) -> str:
        return task.worker.name if task.worker else "-"

    @admin.display(description="duration")
    def duration(self, task: GenerationTask) -> str:
        elapsed = task.elapsed_time
        return "-" if elapsed is None else f"{elapsed:.1f} s"

    def _image_url(self, task: GenerationTask, kind: str, thumb: bool) -> str:
        url = reverse("admin:generation_generationtask_image", args=[task.pk, kind])
        return url + "?thumb=1" if thumb else url

    def _thumb(self, task: GenerationTask, kind: str, side: int) -> str:
        if not getattr(task, f"{kind}_image"):
            return "-"
        full, small = self._image_url(task, kind, False), self._image_url(task, kind, True)
        return format_html(
            '<a href="{}"><img src="{}" alt="{} image" loading="lazy" style="max-width:{}px;max-height:{}px"></a>',
            full, small, kind, side, side,
        )

    @admin.display(description="input")
    def input_thumb(self, task: GenerationTask) -> str:
        return self._thumb(task, "input", 48)

    @admin.display(description="result")
    def result_thumb(self, task: GenerationTask) -> str:
        return self._thumb(task, "result", 48)

    @admin.display(description="input image")
    def input_preview(self, task: GenerationTask) -> str:
        return self._thumb(task, "input", thumbnails.THUMB_SIDE)

    @admin.display(description="result image")
    def result_preview(self, task: GenerationTask) -> str:
        return self._thumb(task, "result", thumbnails.THUMB_SIDE)

    @admin.display(description="product mask")
    def mask_preview(self, task: GenerationTask) -> str:
        return self._thumb(task, "mask", thumbnails.THUMB_SIDE)

    @admin.display(description="outputs")
    def outputs_table(self, task: GenerationTask) -> str:
        """Every rendered output with its preview, size, file and verdicts."""
        outputs = task.rendered_outputs()
        if not outputs:
            return "-"
        rows = format_html_join(
            "", "<tr><td><a href=\"{}\"><img src=\"{}\" alt=\"{}\" loading=\"lazy\" style=\"max-width:64px;max-height:64px\">"
            "</a></td><td>{}</td><td>{}</td><td>{}</td><td>{} x {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (self._image_url(task, f"output-{o.index}", False), self._image_url(task, f"output-{o.index}", True),
                 o.name, o.name, o.preset, o.format, o.width, o.height, f"{o.bytes:,}",
                 "passed" if (o.compliance or {}).get("passed") else "FAILED: " + ", ".join(
                     name for name, c in ((o.compliance or {}).get("checks") or {}).items() if c.get("status") == "failed"),
                 "needs review" if o.needs_review else "-")
                for o in outputs
            ),
        )
        return format_html(
            "<table><thead><tr><th></th><th>name</th><th>preset</th><th>format</th><th>size</th><th>bytes</th>"
            "<th>compliance</th><th>review</th></tr></thead><tbody>{}</tbody></table>", rows,
        )

    @admin.display(description="why a look is needed")
    def review_reasons(self, task: GenerationTask) -> str:
        reasons = (task.compliance or {}).get("review_reasons") or []
        if not reasons:
            return "-"
        return format_html(
            "<ul>{}</ul>",
            format_html_join("", "<li><code>{}</code> {}</li>", ((r.get("code", ""), r.get("message", "")) for r in reasons)),
        )

    @admin.display(description="events (oldest first)")
    def timeline(self, task: GenerationTask) -> str:
        events = list(Event.objects.filter(user_id=task.user_id, task_id=task.pk).order_by("seq")[:TIMELINE_LIMIT])
        if not events:
            return "No events (older ones are removed by retention)."
        rows = format_html_join(
            "\n", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}%</td><td>{}</td></tr>",
            (
                (e.seq, e.created_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], e.type, e.data.get("status"),
                 e.data.get("progress"), e.data.get("error_code") or "")
                for e in events
            ),
        )
        return format_html(
            "<table><thead><tr><th>seq</th><th>time (UTC)</th><th>type</th><th>status</th><th>progress</th>"
            "<th>error</th></tr></thead><tbody>{}</tbody></table>", rows,
        )

    # --- actions ------------------------------------------------------------------------
    def _apply(self, request: HttpRequest, queryset: QuerySet, change: Callable[[GenerationTask], Any],
               done_message: str, log_message: str) -> None:
        done = 0
        for task in queryset.order_by("id"):
            try:
                change(task)
            except InvalidTransition as exc:
                self.message_user(request, f"Task {task.pk}: {exc}.", messages.WARNING)
                continue
            self.log_change(request, task, log_message)
            done += 1
        self.message_user(request, done_message.format(done), messages.SUCCESS if done else messages.INFO)

    @admin.action(description="Retry selected failed or canceled tasks", permissions=["change"])
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, GenerationTask.retry, "Retried {} task(s).", "Retried (admin action)")

    @admin.action(description="Cancel selected pending or processing tasks", permissions=["change"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, GenerationTask.cancel, "Canceled {} task(s).", "Canceled (admin action)")

    @admin.action(description="Requeue selected stuck processing tasks", permissions=["change"])
    def requeue_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, GenerationTask.requeue, "Requeued {} task(s).", "Requeued (admin action)")

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            func, name, _ = actions["delete_selected"]
            actions["delete_selected"] = (func, name, "Delete selected finished tasks and their files")
        return actions

    # --- deletion: finished tasks only, files included -------------------------------
    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        finished = [task for task in queryset if task.is_finished]
        return super().log_deletions(request, finished) if finished else []

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        ids = list(queryset.values_list("id", flat=True))
        deleted = retention.delete_tasks(ids)
        kept = sorted(set(ids) - set(deleted))
        if kept:
            self.message_user(
                request, f"Kept active task(s) {', '.join(map(str, kept))}: cancel them first.", messages.WARNING
            )

    def delete_model(self, request: HttpRequest, obj: GenerationTask) -> None:
        retention.delete_tasks([obj.pk])

    # --- extra pages ---------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(lambda r: dashboard.dashboard(r, self)), name="generation_dashboard"),
            path("dashboard/intake/", wrap(lambda r: dashboard.set_intake(r, self)), name="generation_intake"),
            path("<path:object_id>/image/<str:kind>/", wrap(self.image_view), name="generation_generationtask_image"),
            *super().get_urls(),
        ]

    def image_view(self, request: HttpRequest, object_id: str, kind: str) -> HttpResponse:
        """A task's input, result or mask image (``?thumb=1``: a small preview), for staff with view permission."""
        task = self.get_object(request, unquote(object_id))
        output = None
        if task is not None and kind.startswith("output-"):
            output = task.output(kind.removeprefix("output-"))
            if output is None:
                raise Http404("No such image.")
        elif kind not in ("input", "result", "mask"):
            raise Http404("No such image.")
        if task is None or not self.has_view_permission(request, task):
            raise Http404("No such image.")
        field = output.file if output is not None else getattr(task, f"{kind}_image")
        if not field:
            raise Http404("No such image.")
        try:
            if request.GET.get("thumb"):
                data, content_type = thumbnails.thumbnail(field)
                response: HttpResponse = HttpResponse(data, content_type=content_type)
            else:
                content_type = output.content_type if output is not None else {
                    "input": task.input_content_type, "result": task.result_content_type, "mask": "image/png"}[kind]
                response = FileResponse(field.open("rb"), content_type=content_type)
        except (OSError, ValueError, SyntaxError):  # missing file or undecodable image
            raise Http404("The image is no longer stored or cannot be read.") from None
        for header, value in _IMAGE_HEADERS.items():
            response[header] = value
        return response


class AliveFilter(admin.SimpleListFilter):
    title = "alive"
    parameter_name = "alive"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Alive"), ("no", "Stopped or silent")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        live = WorkerProcess.objects.live().values("pk")
        if self.value() == "yes":
            return queryset.filter(pk__in=live)
        if self.value() == "no":
            return queryset.exclude(pk__in=live)
        return queryset


@admin.register(WorkerProcess)
class WorkerProcessAdmin(admin.ModelAdmin):
    list_display = (
        "name", "host", "pid", "started_at", "last_heartbeat", "heartbeat_age", "concurrency",
        "tasks_done", "alive", "current_tasks", "embedded",
    )
    list_filter = (AliveFilter, "embedded", "host")
    search_fields = ("name", "host")
    readonly_fields = [f.name for f in WorkerProcess._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        processing = GenerationTask.objects.filter(status=GenerationTask.Status.PROCESSING).only("id", "worker_id")
        live = WorkerProcess.objects.live().filter(pk=OuterRef("pk"))
        return (
            super().get_queryset(request)
            .annotate(is_live=Exists(live))
            .prefetch_related(Prefetch("tasks", processing, to_attr="processing"))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WorkerProcess | None = None) -> bool:
        return False  # rows are written by the workers themselves

    def has_delete_permission(self, request: HttpRequest, obj: WorkerProcess | None = None) -> bool:
        if obj is not None and self._is_alive(obj):
            return False
        return super().has_delete_permission(request, obj)

    @staticmethod
    def _is_alive(worker: WorkerProcess) -> bool:
        # Rows of this admin's queryset carry the answer of WorkerProcess.objects.live().
        live = getattr(worker, "is_live", None)
        return WorkerProcess.objects.live().filter(pk=worker.pk).exists() if live is None else live

    @admin.display(boolean=True, description="alive?")
    def alive(self, worker: WorkerProcess) -> bool:
        return self._is_alive(worker)

    @admin.display(description="heartbeat age", ordering="-last_heartbeat")
    def heartbeat_age(self, worker: WorkerProcess) -> str:
        return f"{(timezone.now() - worker.last_heartbeat).total_seconds():.1f} s"

    @admin.display(description="current tasks")
    def current_tasks(self, worker: WorkerProcess) -> str:
        tasks = getattr(worker, "processing", [])
        if not tasks:
            return "-"
        return format_html_join(
            ", ", '<a href="{}">{}</a>',
            ((reverse("admin:generation_generationtask_change", args=[t.pk]), t.pk) for t in tasks),
        )


@admin.register(QueueControl)
class QueueControlAdmin(admin.ModelAdmin):
    """Read-only: the switches are flipped on the dashboard, which logs each change."""

    list_display = ("__str__", "intake_paused", "intake_paused_by", "intake_paused_at", "retention_ran_at")
    readonly_fields = [f.name for f in QueueControl._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: QueueControl | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: QueueControl | None = None) -> bool:
        return False
