from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .models import ApiKey


class NameField(serializers.CharField):
    """A JSON string only: DRF's CharField would turn ``0`` or ``true`` into a name."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class ApiKeySerializer(serializers.ModelSerializer):
    name = NameField(max_length=100, allow_blank=False, trim_whitespace=True)

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at", "last_used_at"]
        read_only_fields = ["id", "prefix", "created_at", "last_used_at"]


class NewApiKeySerializer(ApiKeySerializer):
    """The answer to a create: the only time ``key`` is shown."""

    key = serializers.SerializerMethodField()

    class Meta(ApiKeySerializer.Meta):
        fields = ["id", "name", "key", "prefix", "created_at", "last_used_at"]

    def get_key(self, obj: ApiKey) -> str:
        raw: Any = self.context["key"]
        return str(raw)
