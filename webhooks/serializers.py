"""Webhook endpoint and delivery JSON (docs/api.md, "Webhooks"): input checks and output shape only."""
from __future__ import annotations

from typing import Any

from rest_framework import serializers

from imagegen_site.urlguard import ForbiddenURL, check_url
from notifications.models import Event

from .models import ALL_EVENTS, WebhookDelivery, WebhookEndpoint

EVENT_TYPES = tuple(Event.Type.values)


class WebhookEndpointSerializer(serializers.ModelSerializer):
    url = serializers.CharField(max_length=2048, help_text="https:// URL the events are POSTed to")
    events = serializers.ListField(
        child=serializers.CharField(max_length=32), allow_empty=False, max_length=len(EVENT_TYPES),
        help_text=f'Event types to receive ({", ".join(EVENT_TYPES)}), or ["*"] for all',
    )
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    enabled = serializers.BooleanField(
        required=False, help_text="false pauses deliveries; true resumes a disabled endpoint where it stopped")

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "description", "enabled", "disabled_reason", "failing_since",
                  "created_at", "updated_at"]
        read_only_fields = ["id", "disabled_reason", "failing_since", "created_at", "updated_at"]

    def validate_url(self, value: str) -> str:
        try:
            check_url(value)
        except ForbiddenURL as exc:
            raise serializers.ValidationError(f"This URL cannot receive webhooks: {exc}.") from None
        return value.strip()

    def validate_events(self, value: list[str]) -> list[str]:
        unknown = [name for name in value if name != ALL_EVENTS and name not in EVENT_TYPES]
        if unknown:
            raise serializers.ValidationError(
                f"Unknown event type {unknown[0]!r}; use {', '.join(EVENT_TYPES)}, or {ALL_EVENTS!r} for all.")
        if ALL_EVENTS in value and len(value) > 1:
            raise serializers.ValidationError(f"{ALL_EVENTS!r} already means every event: give it alone.")
        return list(dict.fromkeys(value))  # duplicates dropped, order kept


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    """The answer to create and rotate-secret: the one time the secret is shown."""

    secret = serializers.CharField(read_only=True, help_text="whsec_ + base64 key; shown only in this answer")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = [*WebhookEndpointSerializer.Meta.read_only_fields, "secret"]


class RotatedSecretSerializer(WebhookEndpointCreatedSerializer):
    previous_secret_expires_at = serializers.DateTimeField(
        read_only=True, help_text="until then deliveries are also signed with the previous secret")

    class Meta(WebhookEndpointCreatedSerializer.Meta):
        fields = [*WebhookEndpointCreatedSerializer.Meta.fields, "previous_secret_expires_at"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    webhook_id = serializers.CharField(source="msg_id", read_only=True,
                                       help_text="the webhook-id header, the same on every attempt")

    class Meta:
        model = WebhookDelivery
        fields = ["id", "webhook_id", "seq", "event_type", "status", "attempts", "last_status_code", "last_error",
                  "last_attempt_at", "next_attempt_at", "delivered_at", "created_at"]
        read_only_fields = fields
