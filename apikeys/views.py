"""``/api/keys/``: an owner's API keys (create, list, revoke). Thin: the model issues and revokes."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from .models import ApiKey
from .serializers import ApiKeySerializer, NewApiKeySerializer


class NotWithApiKey(BasePermission):
    """Keys are managed by a person (a token or a session), never by a key: a leaked key
    that could mint more keys would survive its own revocation."""

    message = "API keys cannot manage API keys; sign in with a token or a session."

    def has_permission(self, request: Request, view: Any) -> bool:
        return not isinstance(request.auth, ApiKey)


class ApiKeyViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.DestroyModelMixin,
                    viewsets.GenericViewSet):
    serializer_class = ApiKeySerializer
    permission_classes = [IsAuthenticated, NotWithApiKey]
    pagination_class = None  # a handful per user
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return ApiKey.objects.none()
        return ApiKey.objects.for_user(self.request.user).active()

    @extend_schema(request=ApiKeySerializer, responses={201: NewApiKeySerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, raw = ApiKey.issue(user=request.user, name=serializer.validated_data["name"])
        return Response(NewApiKeySerializer(key, context={"key": raw}).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.get_object().revoke()
        return Response(status=status.HTTP_204_NO_CONTENT)
