from __future__ import annotations

from django.urls import path

from . import stream, views

urlpatterns = [
    path("events/", views.events, name="events"),
    path("events/stream/", stream.events_stream, name="events-stream"),
    path("tasks/<int:task_id>/events/stream/", stream.task_events_stream, name="task-events-stream"),
]
