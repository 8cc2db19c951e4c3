"""Serving a stored image to its owner: every download view calls ``file_response``.

Local storage (``MEDIA_ROOT``): the file streamed by this process. Shared object
storage (``STORAGE_URL``): a 302 to a presigned link valid for a few minutes, so
the bytes go from the store to the client and no web process needs the file
(or to be the machine that wrote it). Either way the caller has already checked
that the task is the requester's: the link is made only after that check, names
one object, and expires.
"""
from __future__ import annotations

from django.conf import settings
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from rest_framework.exceptions import NotFound


def file_response(request: HttpRequest, field: FieldFile, content_type: str, filename: str) -> HttpResponse:
    """The download of ``field`` as ``filename`` (with its extension), or a JSON 404 when
    the local file is gone. A presigned object that is gone answers the store's own 404."""
    if settings.STORAGE_URL:
        url = field.storage.url(field.name, parameters={
            "ResponseContentType": content_type,
            "ResponseContentDisposition": f'inline; filename="{filename}"',
            "ResponseCacheControl": "private, max-age=3600",
        })
        redirect = HttpResponseRedirect(url)
        # The link expires: a cached redirect would outlive it.
        redirect["Cache-Control"] = "private, no-store"
        return redirect
    try:
        handle = field.open("rb")
    except FileNotFoundError:
        raise NotFound("The image is no longer stored.") from None
    response = FileResponse(handle, content_type=content_type, filename=filename)
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response
