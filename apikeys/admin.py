from __future__ import annotations

from typing import Any

from django.contrib import admin

from .models import ApiKey


class RevokedFilter(admin.SimpleListFilter):
    title = "revoked"
    parameter_name = "revoked"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Revoked"), ("no", "Active")]

    def queryset(self, request: Any, queryset: Any) -> Any:
        if self.value() in ("yes", "no"):
            return queryset.filter(revoked_at__isnull=self.value() == "no")
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = [RevokedFilter]
    search_fields = ["prefix", "name", "user__username"]
    list_select_related = ["user"]
    # The digest is all there is; a key is created by its owner, where it is shown once.
    readonly_fields = ["user", "name", "prefix", "digest", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_keys"]

    def has_add_permission(self, request: Any) -> bool:
        return False

    @admin.action(description="Revoke the selected keys (closes their open streams)")
    def revoke_keys(self, request: Any, queryset: Any) -> None:
        revoked = sum(key.revoke() for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).")
