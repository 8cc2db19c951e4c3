from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from .account import AccountView
from .batch_views import BatchViewSet
from .views import TaskViewSet
from .waiting import waiting_submit

router = SimpleRouter()
router.register("tasks", TaskViewSet, basename="task")
router.register("batches", BatchViewSet, basename="batch")

urlpatterns = [
    # intake: POST /api/tasks/ with "Prefer: wait=N" waits asynchronously (generation.waiting).
    path("tasks/", waiting_submit(TaskViewSet.as_view({"get": "list", "post": "create"})), name="task-list"),
    *router.urls,
]
# Fleet: the caller's usage and quotas.
urlpatterns += [path("account/", AccountView.as_view(), name="account")]
