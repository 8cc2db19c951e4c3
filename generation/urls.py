from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from .account import AccountView
from .views import TaskViewSet

router = SimpleRouter()
router.register("tasks", TaskViewSet, basename="task")

urlpatterns = router.urls
# Fleet: the caller's usage and quotas.
urlpatterns += [path("account/", AccountView.as_view(), name="account")]
