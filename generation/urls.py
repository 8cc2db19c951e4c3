from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .batch_views import BatchViewSet
from .views import TaskViewSet

router = SimpleRouter()
router.register("tasks", TaskViewSet, basename="task")
router.register("batches", BatchViewSet, basename="batch")

urlpatterns = router.urls
