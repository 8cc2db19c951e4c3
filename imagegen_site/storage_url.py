"""``STORAGE_URL`` -> Django's ``STORAGES``: uploads, results and masks on an S3-compatible store.

``s3://BUCKET[/PREFIX]?endpoint_url=http://host:9000&region_name=eu-west-1`` selects
django-storages' S3 backend (boto3); credentials come from boto3's usual chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance role).
Parsed once at start, so a typo stops the process with the variable named
instead of failing the first upload. A leaf: imports no app.
"""
from __future__ import annotations

import importlib.util
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.core.exceptions import ImproperlyConfigured

EXAMPLE = "STORAGE_URL=s3://imagegen-media?endpoint_url=http://127.0.0.1:9000"
#: How long a presigned download link works: a client follows the redirect at once.
DEFAULT_PRESIGN_SECONDS = 300
_TEXT_OPTIONS = ("endpoint_url", "region_name", "addressing_style", "signature_version")


def storages_from_url(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ImproperlyConfigured(f"STORAGE_URL must be an s3:// URL (e.g. {EXAMPLE}), got {url!r}")
    if not parts.netloc:
        raise ImproperlyConfigured(f"STORAGE_URL names no bucket (e.g. {EXAMPLE}), got {url!r}")
    options: dict[str, Any] = {
        "bucket_name": parts.netloc,
        "location": parts.path.strip("/"),
        "querystring_auth": True,  # private objects, reached through presigned links only
        "querystring_expire": DEFAULT_PRESIGN_SECONDS,
        "file_overwrite": True,  # names are random uuids: no HEAD request per save to find a free one
        "default_acl": None,
        # boto3 still presigns S3 links with the legacy signature (``AWSAccessKeyId=...&Signature=``)
        # unless told otherwise; AWS refuses it in every region opened since 2014 and on new
        # buckets elsewhere, MinIO and moto take SigV4 too. ``signature_version`` overrides it.
        "signature_version": "s3v4",
    }
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _TEXT_OPTIONS:
            if not value:
                raise ImproperlyConfigured(f"STORAGE_URL: {key} is empty (e.g. {EXAMPLE})")
            if key == "endpoint_url" and not value.startswith(("http://", "https://")):
                raise ImproperlyConfigured(f"STORAGE_URL: endpoint_url must be an http(s):// URL, got {value!r}")
            options[key] = value
        elif key == "presign_seconds":
            if not value.isdigit() or not 1 <= int(value) <= 7 * 24 * 3600:
                raise ImproperlyConfigured(f"STORAGE_URL: presign_seconds must be 1-604800, got {value!r}")
            options["querystring_expire"] = int(value)
        else:
            known = ", ".join((*_TEXT_OPTIONS, "presign_seconds"))
            raise ImproperlyConfigured(f"STORAGE_URL: unknown option {key!r} (known: {known})")
    for package in ("storages", "boto3"):
        if importlib.util.find_spec(package) is None:
            raise ImproperlyConfigured(f"STORAGE_URL is set but {package} is not installed "
                                       "(pip install -r requirements.txt)")
    return {
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
