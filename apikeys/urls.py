from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .views import ApiKeyViewSet

router = SimpleRouter()
router.register("keys", ApiKeyViewSet, basename="apikey")

urlpatterns = router.urls
