"""The settings module: env-driven, safe defaults, refuses unsafe production config."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from imagegen_site import settings as site_settings

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import json, django; from django.conf import settings as s; django.setup(); "
    "print(json.dumps({'db': s.DATABASES['default']['ENGINE'], 'layer': s.CHANNEL_LAYERS['default']['BACKEND'], "
    "'embedded': s.IMAGEGEN_EMBEDDED_WORKER, 'cache': s.CACHES['default']['BACKEND'], "
    "'options': s.DATABASES['default'].get('OPTIONS', {}), 'timeout': s.IMAGEGEN_HEARTBEAT_TIMEOUT}))"
)


def probe(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("IMAGEGEN_")}
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**clean, "DJANGO_SETTINGS_MODULE": "imagegen_site.settings", **env},
    )


def test_with_nothing_set_it_is_the_embedded_default():
    result = probe()
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["db"] == "django.db.backends.sqlite3"
    assert config["layer"] == "channels.layers.InMemoryChannelLayer"
    assert config["embedded"] is True
    assert config["options"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in config["options"]["init_command"]


def test_database_and_redis_urls_switch_to_postgres_and_channels_redis():
    result = probe(DATABASE_URL="postgres://postgres@127.0.0.1:5432/test", REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["db"] == "django.db.backends.postgresql"
    assert config["layer"].startswith("channels_redis.")
    assert config["embedded"] is False


def test_production_mode_refuses_the_development_secret_key():
    postgres = "postgres://postgres@127.0.0.1:5432/test"
    result = probe(DEBUG="0", DATABASE_URL=postgres)  # no key of its own outside the SQLite default
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr
    result = probe(DEBUG="0", SECRET_KEY=site_settings.DEFAULT_SECRET_KEY)
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr
    assert probe(DEBUG="0", DATABASE_URL=postgres, SECRET_KEY="a-real-secret-key-for-production-0123456789").returncode == 0


KEY_PROBE = "from django.conf import settings as s; print(s.SECRET_KEY)"


def key_probe(**env: str) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG")}
    return subprocess.Popen([sys.executable, "-c", KEY_PROBE], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**clean, "DJANGO_SETTINGS_MODULE": "imagegen_site.settings", **env})


def started_key(**env: str) -> str:
    out, err = key_probe(**env).communicate(timeout=60)
    assert not err.strip() or "Traceback" not in err, err
    return out.strip()


def test_the_embedded_default_makes_its_own_key_once_and_keeps_it(tmp_path: Path):
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    key_file = tmp_path / "db.sqlite3.secret_key"
    first = started_key(DATABASE_URL=database)
    assert first and first != site_settings.DEFAULT_SECRET_KEY and len(first) >= 50
    assert key_file.read_text().strip() == first
    assert key_file.stat().st_mode & 0o777 == 0o600  # readable by the owner only
    assert started_key(DATABASE_URL=database) == first  # a restart keeps tokens and sessions valid
    assert started_key(DATABASE_URL=f"sqlite:///{tmp_path / 'other' / 'db.sqlite3'}") != first  # per install


def test_the_generated_key_lets_production_mode_run(tmp_path: Path):
    assert started_key(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", DEBUG="0") == (
        (tmp_path / "db.sqlite3.secret_key").read_text().strip())


def test_a_configured_secret_key_wins_and_no_file_is_written(tmp_path: Path):
    key = "a-real-secret-key-for-production-0123456789"
    assert started_key(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", SECRET_KEY=key) == key
    assert not (tmp_path / "db.sqlite3.secret_key").exists()


def test_processes_starting_together_agree_on_one_key(tmp_path: Path):
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    procs = [key_probe(DATABASE_URL=database) for _ in range(4)]
    keys = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert keys == {(tmp_path / "db.sqlite3.secret_key").read_text().strip()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.sqlite3.secret_key"]  # no leftovers


def test_an_unusable_key_file_is_a_clear_error(tmp_path: Path):
    (tmp_path / "db.sqlite3.secret_key").write_text("short\n")
    out, err = key_probe(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}").communicate(timeout=60)
    assert "db.sqlite3.secret_key does not hold a usable SECRET_KEY" in err


def test_a_malformed_value_is_a_clear_error():
    result = probe(IMAGEGEN_HEARTBEAT_TIMEOUT="soon")
    assert result.returncode != 0 and "IMAGEGEN_HEARTBEAT_TIMEOUT" in result.stderr


def test_env_helpers_parse_and_reject(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "7")
    monkeypatch.setenv("X_LIST", "a.example, b.example,,")
    assert site_settings.env_bool("X_BOOL") is True
    assert site_settings.env_int("X_INT", 1) == 7
    assert site_settings.env_list("X_LIST", []) == ["a.example", "b.example"]
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ImproperlyConfigured):
        site_settings.env_bool("X_BOOL")
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured):
        site_settings.env_int("X_INT", 1, minimum=1)


def test_channels_is_not_an_installed_app_so_our_runworker_wins():
    from django.conf import settings
    from django.core.management import get_commands

    assert "channels" not in settings.INSTALLED_APPS
    assert settings.INSTALLED_APPS[0] == "daphne"
    assert get_commands()["runworker"] == "generation"


def test_every_throttle_keeps_its_history_in_the_one_process_cache():
    # DRF's default is the context-local cache: a Redis connection pool per ASGI request.
    from rest_framework.settings import api_settings

    from generation.views import SubmitThrottle
    from imagegen_site.cache import process_cache
    from notifications.views import EventsThrottle

    for cls in [*api_settings.DEFAULT_THROTTLE_CLASSES, SubmitThrottle, EventsThrottle]:
        assert cls().cache is process_cache(), cls


@pytest.mark.parametrize("value", ["-1", "two"])
def test_a_bad_per_user_running_cap_is_a_clear_error(value: str):
    result = probe(IMAGEGEN_MAX_RUNNING_PER_USER=value)
    assert result.returncode != 0 and "IMAGEGEN_MAX_RUNNING_PER_USER" in result.stderr


@pytest.mark.parametrize("raw, seconds", [("259200", 259200), ("90s", 90), ("15m", 900), ("36h", 129600),
                                          ("3d", 259200), ("1.5h", 5400), (" 2D ", 172800)])
def test_durations_take_seconds_or_one_unit(monkeypatch, raw, seconds):
    monkeypatch.setenv("X_DURATION", raw)
    assert site_settings.env_duration("X_DURATION", 1) == seconds


@pytest.mark.parametrize("raw", ["3 days", "d", "-1h", "1w", "inf", "nan"])
def test_a_bad_webhook_duration_stops_the_start_naming_the_variable(raw):
    result = probe(IMAGEGEN_WEBHOOK_DISABLE_AFTER=raw)
    assert result.returncode != 0
    assert "ImproperlyConfigured: IMAGEGEN_WEBHOOK_DISABLE_AFTER must" in result.stderr, result.stderr[-500:]
