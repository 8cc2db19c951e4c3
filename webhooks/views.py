"""REST endpoints for webhooks: they speak HTTP and call model methods, nothing more."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from generation.exceptions import Conflict
from generation.pagination import TaskPagination
from imagegen_site.parsers import JSONParser

from .models import Unavailable, WebhookDelivery, WebhookEndpoint
from .serializers import (
    RotatedSecretSerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreatedSerializer,
    WebhookEndpointSerializer,
)


class Pagination(TaskPagination):
    """Page-number pages without the task list's ``last_seq``."""


@extend_schema_view(
    list=extend_schema(summary="The caller's webhook endpoints, newest first"),
    retrieve=extend_schema(summary="One of the caller's webhook endpoints"),
    partial_update=extend_schema(summary="Change an endpoint's url, events, description or enabled"),
    destroy=extend_schema(summary="Delete an endpoint (its pending deliveries are dropped)"),
)
class WebhookEndpointViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                             viewsets.GenericViewSet):
    serializer_class = WebhookEndpointSerializer
    pagination_class = Pagination
    queryset = WebhookEndpoint.objects.none()  # for the schema; requests use get_queryset
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    parser_classes = [JSONParser]

    def get_queryset(self) -> Any:
        return WebhookEndpoint.objects.for_user(self.request.user)

    @extend_schema(summary="Register an endpoint; the answer shows its secret, once",
                   responses={201: WebhookEndpointCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = WebhookEndpointSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if self.get_queryset().count() >= settings.IMAGEGEN_WEBHOOK_MAX_ENDPOINTS_PER_USER:
            raise ValidationError({"url": f"At most {settings.IMAGEGEN_WEBHOOK_MAX_ENDPOINTS_PER_USER} endpoints "
                                          "per user; delete one first."})
        data = serializer.validated_data
        endpoint = WebhookEndpoint.create_for(request.user, url=data["url"], events=data["events"],
                                              description=data.get("description", ""))
        if data.get("enabled") is False:
            endpoint.change(enabled=False)
        return Response(WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED,
                        headers={"Location": f"/api/webhooks/{endpoint.pk}/"})

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        endpoint = self.get_object()
        serializer = WebhookEndpointSerializer(endpoint, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        endpoint.change(**serializer.validated_data)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(summary="A new secret, shown once; the old one keeps signing for the grace period",
                   request=None, responses={200: RotatedSecretSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        endpoint = self.get_object()
        endpoint.rotate_secret()
        return Response(RotatedSecretSerializer(endpoint).data)

    @extend_schema(summary="The endpoint's deliveries, newest event first",
                   responses={200: WebhookDeliverySerializer(many=True)})
    @action(detail=True, methods=["get"], serializer_class=WebhookDeliverySerializer)
    def deliveries(self, request: Request, pk: str | None = None) -> Response:
        endpoint = self.get_object()
        page = self.paginate_queryset(endpoint.deliveries.all())
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)

    @extend_schema(summary="Send a delivery again (same webhook-id), now",
                   parameters=[OpenApiParameter("delivery_id", int, OpenApiParameter.PATH)], request=None, responses={202: WebhookDeliverySerializer,
                                            409: OpenApiResponse(description="in flight, or the endpoint is disabled")})
    @action(detail=True, methods=["post"], url_path=r"deliveries/(?P<delivery_id>\d+)/redeliver",
            serializer_class=WebhookDeliverySerializer)
    def redeliver(self, request: Request, pk: str | None = None, delivery_id: str | None = None) -> Response:
        endpoint = self.get_object()
        delivery = get_object_or_404(WebhookDelivery, endpoint=endpoint, pk=delivery_id)
        try:
            delivery.redeliver()
        except Unavailable as exc:
            raise Conflict(str(exc)) from None
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
