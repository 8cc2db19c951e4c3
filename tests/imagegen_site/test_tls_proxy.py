"""BEHIND_TLS_PROXY: behind nginx terminating TLS, Django takes the request as HTTPS, so a login POST from
the https:// page passes CSRF's Origin check (a settings probe in a fresh process, as the env is read at start)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.middleware.csrf import CsrfViewMiddleware, get_token
from django.test import RequestFactory

factory = RequestFactory()
first = factory.get("/admin/login/")
token = get_token(first)
login = factory.post("/admin/login/", {"csrfmiddlewaretoken": token}, HTTP_HOST="testserver",
                     HTTP_ORIGIN="https://testserver", HTTP_X_FORWARDED_PROTO="https")
login.COOKIES[settings.CSRF_COOKIE_NAME] = first.META["CSRF_COOKIE"]
refused = CsrfViewMiddleware(lambda request: None).process_view(login, lambda request: None, (), {})
print(json.dumps({"secure": login.is_secure(), "csrf_ok": refused is None,
                  "cookies_secure": [settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE]}))
"""


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "BEHIND_TLS_PROXY")}
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**clean, "DJANGO_SETTINGS_MODULE": "imagegen_site.settings", **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_behind_a_tls_proxy_a_login_from_the_https_page_passes_the_csrf_check_and_cookies_are_secure() -> None:
    assert probe(BEHIND_TLS_PROXY="1") == {"secure": True, "csrf_ok": True, "cookies_secure": [True, True]}


def test_without_it_django_ignores_the_forwarded_scheme_and_cookies_are_not_secure() -> None:
    assert probe() == {"secure": False, "csrf_ok": False, "cookies_secure": [False, False]}
