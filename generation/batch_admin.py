"""Batches in the Django admin: what each holds and how far it got, and a way to its tasks.

A batch's status, counts and times are derived from its tasks, in their own
transactions (``Batch.recount``), and its options were copied into each task at
submit: a form that edited them would show something no task does. So the page
is read-only; the one change is the cancel action, through ``Batch.cancel`` (each
task's own transition with its events), recorded in the admin's history.
"""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from .models import Batch, InvalidTransition
from .models.batch import COUNTED
from .work_admin import WorkAdmin

#: The change page lists at most this many of a batch's tasks (a batch holds up to 100).
TASKS_SHOWN = 100


def tasks_url(batch: Batch, status: str | None = None) -> str:
    """The task changelist filtered to one batch (and one status)."""
    url = f"{reverse('admin:generation_generationtask_changelist')}?batch={batch.pk}"
    return f"{url}&status__exact={status}" if status else url


@admin.register(Batch)
class BatchAdmin(WorkAdmin):
    list_display = ("id", "user", "status", "progress_bar", "total", *COUNTED, "client_ref", "created_at",
                    "finished_at", "tasks_link")
    list_filter = ("status", ("user", admin.RelatedOnlyFieldListFilter), "created_at", "finished_at")
    search_fields = ("=id", "user__username", "client_ref")
    search_help_text = "Batch id, the owner's username, or the batch's client_ref"
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    list_per_page = 50
    show_full_result_count = False
    actions = ["cancel_batches"]
    fieldsets = (
        (None, {"fields": ("id", "user", "status", "progress_bar", "client_ref", "idempotency_key")}),
        ("Counts", {"fields": ("total", "counts_table")}),
        ("Shared options", {"fields": ("options",)}),
        ("Timing", {"fields": ("created_at", "canceled_at", "finished_at", "updated_at")}),
        ("Tasks", {"fields": ("tasks_table",)}),
    )
    readonly_fields = [*(f.name for f in Batch._meta.fields), "progress_bar", "counts_table", "tasks_table"]

    # Deleting a finished batch (WorkAdmin allows no other) leaves its tasks as single
    # tasks (batch set to null), as retention does not.

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        finished = [batch for batch in queryset if batch.is_finished]
        return super().log_deletions(request, finished) if finished else []

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        # The confirmation page refused unfinished ones; a batch reopened since (a task
        # retried) is kept too.
        super().delete_queryset(request, queryset.filter(status__in=Batch.FINISHED))

    # --- columns ----------------------------------------------------------------------
    @admin.display(description="progress")
    def progress_bar(self, batch: Batch) -> str:
        return format_html('<progress value="{}" max="100"></progress> {}%', batch.progress, batch.progress)

    @admin.display(description="tasks")
    def tasks_link(self, batch: Batch) -> str:
        return format_html('<a href="{}">{} task(s)</a>', tasks_url(batch), batch.total)

    @admin.display(description="by status")
    def counts_table(self, batch: Batch) -> str:
        cells = format_html_join(
            "", "<tr><td>{}</td><td><a href=\"{}\">{}</a></td></tr>",
            ((name, tasks_url(batch, name), count) for name, count in batch.counts.items()),
        )
        return format_html("<table><tbody>{}</tbody></table>", cells)

    @admin.display(description="tasks (submission order)")
    def tasks_table(self, batch: Batch) -> str:
        tasks = list(batch.tasks.order_by("id").only("id", "status", "source_name", "client_ref", "error_code")
                     [:TASKS_SHOWN])
        if not tasks:
            return "No tasks left (removed by retention or deleted)."
        rows = format_html_join(
            "\n", "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (reverse("admin:generation_generationtask_change", args=[t.pk]), t.pk, t.status,
                 t.source_name or "-", t.client_ref or "-", t.error_code or "")
                for t in tasks
            ),
        )
        return format_html(
            "<table><thead><tr><th>task</th><th>status</th><th>file</th><th>client_ref</th><th>error</th></tr>"
            "</thead><tbody>{}</tbody></table>", rows,
        )

    # --- actions ------------------------------------------------------------------------
    @admin.action(description="Cancel the unfinished tasks of the selected batches", permissions=["change"])
    def cancel_batches(self, request: HttpRequest, queryset: QuerySet) -> None:
        canceled = 0
        for batch in queryset.order_by("id"):
            try:
                count = batch.cancel()
            except InvalidTransition as exc:
                self.message_user(request, f"Batch {batch.pk}: {exc}.", messages.WARNING)
                continue
            self.log_change(request, batch, f"Canceled {count} task(s) (admin action)")
            canceled += count
        self.message_user(request, f"Canceled {canceled} task(s).", messages.SUCCESS if canceled else messages.INFO)
