"""Webhook endpoints and their delivery log in the admin; redelivery goes through the model."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Unavailable, WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "url", "events", "enabled", "failing_since", "failures", "retry_at", "disabled_at",
                    "cursor", "created_at")
    list_filter = ("enabled",)
    search_fields = ("=id", "user__username", "url")
    list_select_related = ("user",)
    # The secret is never shown here either: owners see it once, at creation or rotation.
    exclude = ("secret", "previous_secret")
    # failures/retry_at: the circuit breaker (open while failures > 0; no attempt before retry_at).
    readonly_fields = ("user", "cursor", "failing_since", "failures", "retry_at", "disabled_at", "disabled_reason",
                       "previous_secret_expires_at", "created_at", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # endpoints belong to their owners (the API)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "endpoint", "seq", "event_type", "status", "attempts", "last_status_code", "last_error",
                    "next_attempt_at", "delivered_at")
    list_filter = ("status", "event_type")
    search_fields = ("=endpoint__id", "endpoint__user__username")
    list_select_related = ("endpoint",)
    show_full_result_count = False
    actions = ["redeliver"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # history; changed only by attempts and the redeliver action

    @admin.action(description="Redeliver the selected deliveries now")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        done, refused = 0, []
        for delivery in queryset:
            try:
                delivery.redeliver()
                done += 1
            except Unavailable as exc:
                refused.append(f"#{delivery.pk}: {exc}")
        if done:
            self.message_user(request, f"{done} delivery(ies) scheduled again.", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)
