"""STORAGE_URL -> STORAGES, and the fleet settings' start-time checks."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from imagegen_site.storage_url import storages_from_url
from tests.test_settings import ROOT, probe


def test_an_s3_url_selects_the_s3_backend_with_private_short_lived_links():
    storages = storages_from_url("s3://media/prod/imagegen?endpoint_url=http://127.0.0.1:9000&region_name=eu-west-1")
    assert storages["default"] == {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": "media", "location": "prod/imagegen", "querystring_auth": True,
                    "querystring_expire": 300, "file_overwrite": True, "default_acl": None,
                    "signature_version": "s3v4", "endpoint_url": "http://127.0.0.1:9000",
                    "region_name": "eu-west-1"},
    }
    assert storages["staticfiles"]["BACKEND"] == "django.contrib.staticfiles.storage.StaticFilesStorage"
    assert storages_from_url("s3://media?presign_seconds=60")["default"]["OPTIONS"]["querystring_expire"] == 60
    assert storages_from_url("s3://media?signature_version=s3")["default"]["OPTIONS"]["signature_version"] == "s3"


@pytest.mark.parametrize("url, message", [
    ("gs://media", "must be an s3:// URL"),
    ("s3://", "names no bucket"),
    ("s3://media?endpoint=http://x", "unknown option 'endpoint'"),
    ("s3://media?endpoint_url=minio:9000", "endpoint_url must be an http(s):// URL"),
    ("s3://media?region_name=", "region_name is empty"),
    ("s3://media?presign_seconds=0", "presign_seconds must be 1-604800"),
])
def test_a_bad_storage_url_is_refused_naming_the_variable(url: str, message: str):
    with pytest.raises(ImproperlyConfigured, match="STORAGE_URL") as info:
        storages_from_url(url)
    assert message in str(info.value)


@pytest.mark.parametrize("env, name", [
    ({"IMAGEGEN_GEMINI_RPM": "fast"}, "IMAGEGEN_GEMINI_RPM"),
    ({"IMAGEGEN_DAILY_TASKS_PER_USER": "-1"}, "IMAGEGEN_DAILY_TASKS_PER_USER"),
    ({"DATABASE_LISTEN_URL": "postgres://u@h/db"}, "DATABASE_LISTEN_URL needs a PostgreSQL DATABASE_URL"),
    ({"DATABASE_URL": "postgres://u@h/db", "DATABASE_LISTEN_URL": "mysql://u@h/db"}, "DATABASE_LISTEN_URL must be"),
])
def test_bad_fleet_settings_stop_the_start(env: dict[str, str], name: str):
    result = probe(**env)
    assert result.returncode != 0 and name in result.stderr


def test_a_listen_url_turns_server_side_cursors_off():
    code = ("import django; from django.conf import settings as s; django.setup(); "
            "print(s.DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'])")
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**clean, "DJANGO_SETTINGS_MODULE": "imagegen_site.settings",
                              "DATABASE_URL": "postgres://u@pooler:6432/db",
                              "DATABASE_LISTEN_URL": "postgres://u@db:5432/db"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
