"""The web page at ``/`` and its static files.

The page is a plain template plus ES modules from ``static/app/``; it talks to
the REST API and the WebSocket like any other client (JWT, no session).

Static files: ``runserver`` serves them only with DEBUG on, and plain
``daphne`` never does. The embedded default is one ``daphne`` command with
nothing in front of it, so this module serves ``STATIC_URL`` through the
staticfiles finders itself (with ``If-Modified-Since`` support). Behind a
reverse proxy that serves ``collectstatic`` output, these routes are simply
never reached.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib.staticfiles.views import serve
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, re_path
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    response = render(request, "index.html")
    # The page holds no user data (that comes from the API with a token), but
    # keep it out of frames: it asks for a password.
    response["X-Frame-Options"] = "DENY"
    response["Referrer-Policy"] = "same-origin"
    return response


@require_GET
@cache_control(public=True, max_age=300)
def static(request: HttpRequest, path: str) -> HttpResponse:
    # insecure=True: serve even with DEBUG off, as nothing else does under plain daphne.
    return serve(request, path, insecure=True)


urlpatterns = [
    path("", index, name="index"),
    re_path(rf"^{settings.STATIC_URL.strip('/')}/(?P<path>.+)$", static, name="static"),
]
