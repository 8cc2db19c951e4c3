"""The answer for a path under ``/api/`` that names no endpoint: JSON, like every API error.

Without it Django renders its HTML 404 (with ``DEBUG`` on, the page that lists
every URL pattern). The catch-all route would also stop ``APPEND_SLASH`` from
redirecting ``/api/tasks`` to ``/api/tasks/`` (the path now resolves), so the
redirect is made here, for the safe methods only, as Django's middleware does.
"""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt


# CSRF-exempt like the API views: a POST to an unknown path is a 404, not an HTML 403.
@csrf_exempt
def api_not_found(request: HttpRequest, unmatched: str = "") -> HttpResponse:
    path = request.path_info
    if settings.APPEND_SLASH and not path.endswith("/"):
        try:
            match = resolve(path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            if request.method in ("GET", "HEAD"):
                return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
            return JsonResponse({"detail": f"Not found: API paths end with a slash ({path}/)."}, status=404)
    return JsonResponse({"detail": f"Not found: no API endpoint at {path}."}, status=404)
