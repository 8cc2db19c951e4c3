"""Queue inspection in the Django admin; every action goes through the model's transitions."""
from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import GenerationTask, InvalidTransition, Worker


@admin.register(GenerationTask)
class GenerationTaskAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "status", "progress", "attempts", "error_code", "worker", "created_at", "finished_at")
    list_filter = ("status", "error_code", "created_at")
    search_fields = ("=id", "user__username")
    date_hierarchy = "created_at"
    list_select_related = ("user", "worker")
    readonly_fields = [f.name for f in GenerationTask._meta.fields]
    actions = ["cancel_tasks", "retry_tasks"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def _apply(self, request: HttpRequest, queryset: QuerySet, method_name: str, verb: str) -> None:
        done = 0
        for task in queryset:
            try:
                getattr(task, method_name)()
                done += 1
            except InvalidTransition as exc:
                self.message_user(request, f"Task {task.pk}: {exc}", messages.WARNING)
        self.message_user(request, f"{verb} {done} task(s).")

    @admin.action(description="Cancel selected tasks")
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, "cancel", "Canceled")

    @admin.action(description="Retry selected tasks")
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, "retry", "Retried")


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("name", "host", "pid", "concurrency", "embedded", "started_at", "last_heartbeat", "stopped_at", "tasks_done")
    readonly_fields = [f.name for f in Worker._meta.fields]
