from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from generation.staff_api import QueueStatsView

from . import health
from .notfound import api_not_found
from .throttling import ScopedThrottle


class TokenView(TokenObtainPairView):
    throttle_classes = [ScopedThrottle]
    throttle_scope = "token"


class RefreshView(TokenRefreshView):
    throttle_classes = [ScopedThrottle]
    throttle_scope = "token"


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/token/", TokenView.as_view(), name="token_obtain_pair"),
    path("api/auth/token/refresh/", RefreshView.as_view(), name="token_refresh"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/queue/stats/", QueueStatsView.as_view(), name="queue-stats"),
    path("api/", include("generation.urls")),
    path("api/", include("notifications.urls")),
    path("api/", include("apikeys.urls")),
    path("api/", include("webhooks.urls")),
    # Last under api/: JSON 404, not Django's HTML page (DOTALL: a path with an encoded newline too).
    re_path(r"^api/(?P<unmatched>(?s:.*))$", api_not_found),
    path("", include("imagegen_site.pages")),
]
