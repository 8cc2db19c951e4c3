"""imagegen settings: one module, driven by environment variables.

With nothing set this is the embedded default: SQLite (WAL) in the project
folder, the in-process channel layer, and workers running inside the web
process. ``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and
channels-redis for production and for the test suite.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)} (e.g. {name}={choices[0]}), "
                                   f"got {raw!r}")
    return value


_RATE_PERIODS = ("s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day")


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate such as ``120/min``; DRF itself would only parse it at the first request (a 500)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip()
    count, _, period = value.partition("/")
    if not count.isdigit() or period.lower() not in _RATE_PERIODS:
        raise ImproperlyConfigured(f"{name} must be a rate like {name}=120/min (per s, min, hour or day), "
                                   f"got {raw!r}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEFAULT_SECRET_KEY = "django-insecure-imagegen-development-key-change-me"
# Unset: the embedded default generates its own key beside its database (below);
# the public development key is left only for DEBUG runs on another database.
SECRET_KEY = env_str("SECRET_KEY").strip() or DEFAULT_SECRET_KEY
DEBUG = env_bool("DEBUG", True)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
# Browser origins allowed to open the WebSocket; by default the ALLOWED_HOSTS
# (Channels' AllowedHostsOriginValidator semantics). Non-browser clients send no Origin.
WS_ALLOWED_ORIGINS = env_list("WS_ALLOWED_ORIGINS", [])
# Behind a proxy that terminates TLS and sets X-Forwarded-Proto (overwriting any a client sent):
# request.is_secure() follows it, so CSRF's Origin check on admin and session POSTs expects
# https://..., and the session and CSRF cookies travel over HTTPS only.
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    # daphne first: its runserver replaces Django's. "channels" is deliberately
    # absent: its own `runworker` command would shadow ours (first app wins).
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally, no CDN
    "generation",
    "notifications",
    "apikeys",  # API keys: imports neither generation nor notifications
    "webhooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "imagegen_site.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "imagegen_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # Workers keep their connection (reconnecting per task costs ~4x throughput);
        # close_old_connections() in the loop checks it is still usable.
        conn_max_age=env_int("CONN_MAX_AGE", 600, minimum=0),
        conn_health_checks=True,
    )
}
IS_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
# ASGI web processes (daphne) run each request's and each socket's sync code on threads that come and go,
# so a persistent connection (CONN_MAX_AGE) is left behind by every such thread: the soak measured 50+
# connections per daphne and then "too many clients" from PostgreSQL. Django's own advice: no persistent
# connections under ASGI, a pool instead. imagegen_site/asgi.py marks the process before settings load;
# workers (long-lived threads) keep their persistent connection.
IMAGEGEN_ASGI_PROCESS = env_bool("IMAGEGEN_ASGI_PROCESS", False)
IMAGEGEN_DB_POOL_SIZE = env_int("IMAGEGEN_DB_POOL_SIZE", 10, minimum=1)
if IMAGEGEN_ASGI_PROCESS and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False  # a broken connection is dropped when it goes back
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": IMAGEGEN_DB_POOL_SIZE, "timeout": 10,
    }
if IS_SQLITE:
    # IMMEDIATE: writers take the lock at BEGIN, so two claims (or two seq
    # increments) serialise instead of failing with "database is locked" on upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
    }

if IS_SQLITE and SECRET_KEY == DEFAULT_SECRET_KEY and not env_str("SECRET_KEY").strip():
    _sqlite_file = str(DATABASES["default"]["NAME"])
    if _sqlite_file and _sqlite_file != ":memory:" and not _sqlite_file.startswith("file:"):
        from .secret_key import install_secret_key, key_file_for

        SECRET_KEY = install_secret_key(key_file_for(Path(_sqlite_file)))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer and cache ----------------------------------------------------
REDIS_URL = env_str("REDIS_URL").strip()
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL (e.g. REDIS_URL=redis://127.0.0.1:6379/0), "
                               f"got {REDIS_URL!r}")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Pub/sub layer: the default RedisChannelLayer drops silently over its
            # per-process capacity (measured 38-68 % loss in a 1,000-message burst).
            # Neither is a delivery guarantee; the event log is.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "max_connections": env_int("REDIS_MAX_CONNECTIONS", 1000)}],
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The web process runs the worker itself when there is no cross-process layer:
# the in-memory layer cannot carry a separate worker's events to the sockets.
IMAGEGEN_EMBEDDED_WORKER = env_bool("IMAGEGEN_EMBEDDED_WORKER", not REDIS_URL)
IMAGEGEN_EMBEDDED_CONCURRENCY = env_int("IMAGEGEN_EMBEDDED_CONCURRENCY", 2, minimum=1)

# --- Auth ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "apikeys.authentication.ApiKeyAuthentication",  # Authorization: Api-Key <key>
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "notifications.pagination.SnapshotPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PARSER_CLASSES": [
        "imagegen_site.parsers.JSONParser",  # deep nesting is a 400, not a 500
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "imagegen_site.throttling.UserThrottle",
        "imagegen_site.throttling.AnonThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_rate("THROTTLE_USER", "1200/min"),
        "anon": env_rate("THROTTLE_ANON", "60/min"),
        "submit": env_rate("THROTTLE_SUBMIT", "120/min"),
        "events": env_rate("THROTTLE_EVENTS", "120/min"),
        "token": env_rate("THROTTLE_TOKEN", "30/min"),
    },
    "EXCEPTION_HANDLER": "generation.exceptions.json_exception_handler",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_ACCESS_SECONDS", 15 * 60, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_REFRESH_SECONDS", 7 * 24 * 3600, minimum=1)),
    "AUTH_HEADER_TYPES": ("Bearer",),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "imagegen API",
    "DESCRIPTION": "Turn a product photo into a marketplace-ready white-background image, "
    "with every task change pushed live over WebSocket (/ws/notifications).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Internationalisation, static and media --------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "/media/"  # never served directly: images go through owner-checked views

# --- Uploads ---------------------------------------------------------------------
IMAGEGEN_MAX_UPLOAD_BYTES = env_int("IMAGEGEN_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, minimum=1)
IMAGEGEN_MAX_PIXELS = env_int("IMAGEGEN_MAX_PIXELS", 40_000_000, minimum=1)
IMAGEGEN_MIN_SIDE = env_int("IMAGEGEN_MIN_SIDE", 64, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = IMAGEGEN_MAX_UPLOAD_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# --- Queue and worker ---------------------------------------------------------------
IMAGEGEN_BACKEND = env_str("IMAGEGEN_BACKEND", "local")
IMAGEGEN_HEARTBEAT_TIMEOUT = env_float("IMAGEGEN_HEARTBEAT_TIMEOUT", 30.0, minimum=0.5)
IMAGEGEN_MAX_ATTEMPTS = env_int("IMAGEGEN_MAX_ATTEMPTS", 3, minimum=1)
IMAGEGEN_RETRY_BASE_SECONDS = env_float("IMAGEGEN_RETRY_BASE_SECONDS", 2.0, minimum=0)
IMAGEGEN_RETRY_MAX_SECONDS = env_float("IMAGEGEN_RETRY_MAX_SECONDS", 300.0, minimum=0)
IMAGEGEN_POLL_INTERVAL = env_float("IMAGEGEN_POLL_INTERVAL", 0.0, minimum=0)  # 0 = by database
IMAGEGEN_SHUTDOWN_GRACE = env_float("IMAGEGEN_SHUTDOWN_GRACE", 20.0, minimum=0)
IMAGEGEN_PROGRESS_INTERVAL = env_float("IMAGEGEN_PROGRESS_INTERVAL", 0.25, minimum=0)
# Fast tasks are claimed in batches worth at most this many seconds of work (0 = one at a time).
IMAGEGEN_PREFETCH_WINDOW = env_float("IMAGEGEN_PREFETCH_WINDOW", 0.25, minimum=0)
# Fleet queue: at most this many processing tasks per user across the fleet (0 = unlimited).
IMAGEGEN_MAX_RUNNING_PER_USER = env_int("IMAGEGEN_MAX_RUNNING_PER_USER", 0, minimum=0)
IMAGEGEN_FIDELITY_MODE = env_choice("IMAGEGEN_FIDELITY_MODE", "fail", ("fail", "flag"))
# The local engine's segmenter: "auto" (the shipped U²-Net-P model), "classical" (no model), or the path of
# an ONNX model with the U²-Net input/output convention. A missing file stops start-up here; the model's
# checksum and I/O are checked when the backend loads it.
IMAGEGEN_SEGMENTER = env_str("IMAGEGEN_SEGMENTER", "auto")
if IMAGEGEN_SEGMENTER not in ("auto", "classical") and not Path(IMAGEGEN_SEGMENTER).expanduser().is_file():
    raise ImproperlyConfigured(
        f"IMAGEGEN_SEGMENTER must be auto, classical or the path of an ONNX model file, got {IMAGEGEN_SEGMENTER!r}"
    )

GEMINI_API_KEY = env_str("GEMINI_API_KEY")
GEMINI_MODEL = env_str("GEMINI_MODEL", "gemini-2.5-flash-image")
GEMINI_BASE_URL = env_str("GEMINI_BASE_URL")
GEMINI_API_VERSION = env_str("GEMINI_API_VERSION", "v1beta")
GEMINI_TIMEOUT_MS = env_int("GEMINI_TIMEOUT_MS", 60_000, minimum=1)

# --- Events and realtime -------------------------------------------------------------
IMAGEGEN_EVENT_RETENTION_SECONDS = env_int("IMAGEGEN_EVENT_RETENTION_SECONDS", 7 * 24 * 3600, minimum=60)

# --- Realtime delivery (notifications: WebSocket, long-poll, limits) ----------------
# Several deployments (or test runs) may share one Redis: pub/sub channels are
# global across Redis databases, so the prefix keeps their groups apart.
CHANNEL_LAYER_PREFIX = env_str("CHANNEL_LAYER_PREFIX", "asgi")
if REDIS_URL:
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = CHANNEL_LAYER_PREFIX
    # Throttles, rate limits and connection counts must fail open when Redis is
    # down: a push outage may not turn into 500s on submit.
    CACHES["default"]["BACKEND"] = "imagegen_site.cache.FailOpenRedisCache"
else:
    # The in-memory layer drops over `capacity` per channel (default 100); a
    # burst to one socket can exceed that before its consumer runs.
    CHANNEL_LAYERS["default"]["CONFIG"] = {"capacity": env_int("IMAGEGEN_INMEMORY_LAYER_CAPACITY", 1000, minimum=1)}
IMAGEGEN_WS_MAX_SOCKETS_PER_USER = env_int("IMAGEGEN_WS_MAX_SOCKETS_PER_USER", 20, minimum=1)
IMAGEGEN_WS_CONNECTS_PER_MINUTE_USER = env_int("IMAGEGEN_WS_CONNECTS_PER_MINUTE_USER", 60, minimum=1)
IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP = env_int("IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP", 600, minimum=1)
IMAGEGEN_WS_MAX_FRAME_BYTES = env_int("IMAGEGEN_WS_MAX_FRAME_BYTES", 4096, minimum=256)
# A client whose unsent frames exceed this (bytes buffered in the server) is
# closed with 4008 and resumes, instead of growing the server's memory.
IMAGEGEN_WS_MAX_SEND_BACKLOG_BYTES = env_int("IMAGEGEN_WS_MAX_SEND_BACKLOG_BYTES", 1024 * 1024, minimum=4096)
# A client ping also checks the log for events whose push was lost; at most this often.
IMAGEGEN_WS_PING_CHECK_SECONDS = env_float("IMAGEGEN_WS_PING_CHECK_SECONDS", 1.0, minimum=0)
# --- Server-Sent Events (GET /api/events/stream/) -------------------------------------
# A comment line this often keeps proxies and EventSource from timing out a quiet stream.
IMAGEGEN_SSE_KEEPALIVE_SECONDS = env_float("IMAGEGEN_SSE_KEEPALIVE_SECONDS", 15.0, minimum=0.05)
# GET /api/events/ is a plain async view: describe it in the schema by hand.
# Then every operation's error answers (401/429 everywhere, 400/404/415 by what it takes).
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums", "notifications.schema.add_events_path",
    "notifications.schema.add_stream_path",
    "imagegen_site.schema.add_error_responses",
]

# --- Logging -------------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

if not DEBUG and SECRET_KEY == DEFAULT_SECRET_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY: DEBUG is off and the public development key is in use "
                               "(only the SQLite default generates a key of its own).")

# --- Operations (retention, intake switch, health, metrics, log format) ------------------
# Finished tasks (rows and image files) older than this are purged by the workers; 0 = keep forever.
IMAGEGEN_TASK_RETENTION_DAYS = env_int("IMAGEGEN_TASK_RETENTION_DAYS", 30, minimum=0)
# Stopped worker rows (one per process start) no task refers to any more; 0 = keep forever.
IMAGEGEN_WORKER_RETENTION_DAYS = env_int("IMAGEGEN_WORKER_RETENTION_DAYS", 7, minimum=0)
# Automatic retention runs at most this often across all workers, one worker at a time.
IMAGEGEN_RETENTION_INTERVAL_MINUTES = env_int("IMAGEGEN_RETENTION_INTERVAL_MINUTES", 60, minimum=1)
IMAGEGEN_RETENTION_CHECK_SECONDS = env_float("IMAGEGEN_RETENTION_CHECK_SECONDS", 60.0, minimum=0.01)
IMAGEGEN_RETENTION_BATCH_SIZE = env_int("IMAGEGEN_RETENTION_BATCH_SIZE", 500, minimum=1)
# Retry-After (seconds) of the 503 that POST /api/tasks/ answers while intake is paused.
IMAGEGEN_INTAKE_RETRY_AFTER = env_int("IMAGEGEN_INTAKE_RETRY_AFTER", 60, minimum=1)
# Each /healthz check (database, channel-layer round trip) must answer within this.
IMAGEGEN_HEALTH_TIMEOUT = env_float("IMAGEGEN_HEALTH_TIMEOUT", 2.0, minimum=0.1)
# /metrics: staff session, or `Authorization: Bearer $METRICS_TOKEN`, or anyone if METRICS_PUBLIC.
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_PUBLIC = env_bool("METRICS_PUBLIC", False)
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", ("plain", "json"))
if LOG_FORMAT == "json":
    LOGGING["formatters"]["json"] = {"()": "imagegen_site.logformat.JsonFormatter"}
    LOGGING["handlers"]["console"]["formatter"] = "json"

# --- URLs the server fetches (image_url) or calls (webhooks): imagegen_site/urlguard.py ----------
# Plain http:// (default: https:// only) and private/loopback/link-local addresses (default: refused,
# also after DNS and redirects) are for tests and closed networks only.
IMAGEGEN_FETCH_ALLOW_HTTP = env_bool("IMAGEGEN_FETCH_ALLOW_HTTP", False)
IMAGEGEN_FETCH_ALLOW_PRIVATE = env_bool("IMAGEGEN_FETCH_ALLOW_PRIVATE", False)
# A whole fetch (connect, redirects, body) within this many seconds.
IMAGEGEN_FETCH_TIMEOUT = env_float("IMAGEGEN_FETCH_TIMEOUT", 20.0, minimum=0.1)

# --- Webhooks (webhooks: signed deliveries from the event log, by the workers) -----------
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def env_duration(name: str, default: float, *, minimum: float = 0) -> float:
    """Seconds, given as a number of seconds (``259200``) or with one unit: ``90s``, ``15m``, ``12h``, ``3d``."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    unit = _DURATION_UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be seconds or a duration like {name}=3d (s, m, h or d), "
                                   f"got {raw!r}") from None
    if not seconds >= minimum or seconds == float("inf"):
        raise ImproperlyConfigured(f"{name} must be at least {minimum:g} seconds, got {raw!r}")
    return seconds


# First retry after this, doubling (with jitter) up to the maximum between two attempts.
IMAGEGEN_WEBHOOK_RETRY_BASE_SECONDS = env_float("IMAGEGEN_WEBHOOK_RETRY_BASE_SECONDS", 10.0, minimum=0.01)
IMAGEGEN_WEBHOOK_RETRY_MAX_SECONDS = env_duration("IMAGEGEN_WEBHOOK_RETRY_MAX_SECONDS", 3600.0, minimum=0.01)
# An endpoint whose deliveries fail without one success for this long is disabled (its owner gets an event).
IMAGEGEN_WEBHOOK_DISABLE_AFTER = env_duration("IMAGEGEN_WEBHOOK_DISABLE_AFTER", 3 * 86400.0, minimum=1)
# After a rotation the old secret also signs deliveries for this long.
IMAGEGEN_WEBHOOK_SECRET_GRACE = env_duration("IMAGEGEN_WEBHOOK_SECRET_GRACE", 86400.0, minimum=0)
IMAGEGEN_WEBHOOK_TIMEOUT = env_float("IMAGEGEN_WEBHOOK_TIMEOUT", 10.0, minimum=0.1)
# Delivery threads per worker process, and how many of them one endpoint may hold at a time.
IMAGEGEN_WEBHOOK_CONCURRENCY = env_int("IMAGEGEN_WEBHOOK_CONCURRENCY", 8, minimum=1)
IMAGEGEN_WEBHOOK_ENDPOINT_CONCURRENCY = env_int("IMAGEGEN_WEBHOOK_ENDPOINT_CONCURRENCY", 2, minimum=1)
# How often an idle delivery loop looks for new events and due retries.
IMAGEGEN_WEBHOOK_POLL_INTERVAL = env_float("IMAGEGEN_WEBHOOK_POLL_INTERVAL", 0.2, minimum=0.01)
IMAGEGEN_WEBHOOK_MAX_ENDPOINTS_PER_USER = env_int("IMAGEGEN_WEBHOOK_MAX_ENDPOINTS_PER_USER", 100, minimum=1)

# --- Fleet: upstream rate, quotas, shared object storage, connection pooler ------------------
# Gemini requests per minute across every worker of the fleet (unset or 0: unlimited), counted in
# the database (generation/models/upstream.py). The window is 60 s; only tests shorten it.
IMAGEGEN_GEMINI_RPM = env_int("IMAGEGEN_GEMINI_RPM", 0, minimum=0) or None
IMAGEGEN_GEMINI_RATE_WINDOW = env_float("IMAGEGEN_GEMINI_RATE_WINDOW", 60.0, minimum=0.1)
# Tasks one user may create per UTC day (unset or 0: unlimited); over it submit is a 429.
IMAGEGEN_DAILY_TASKS_PER_USER = env_int("IMAGEGEN_DAILY_TASKS_PER_USER", 0, minimum=0) or None

# Shared object storage: s3://bucket?endpoint_url=...&region_name=...; credentials from AWS_* variables.
STORAGE_URL = env_str("STORAGE_URL").strip()  # unset: files under MEDIA_ROOT
if STORAGE_URL:
    from .storage_url import storages_from_url

    STORAGES = storages_from_url(STORAGE_URL)

# Behind a transaction-mode pooler (PgBouncer) DATABASE_URL points at the pooler, and this direct
# URL carries what needs a session: the wake-up LISTEN and the retention run's advisory lock.
DATABASE_LISTEN_URL = env_str("DATABASE_LISTEN_URL").strip()
if DATABASE_LISTEN_URL:
    if IS_SQLITE:
        raise ImproperlyConfigured("DATABASE_LISTEN_URL needs a PostgreSQL DATABASE_URL (it is the direct "
                                   "connection beside a pooler), but DATABASE_URL is SQLite")
    try:
        _listen = dj_database_url.parse(DATABASE_LISTEN_URL)
    except Exception as exc:
        raise ImproperlyConfigured(f"DATABASE_LISTEN_URL must be a postgres:// URL "
                                   f"(e.g. DATABASE_LISTEN_URL=postgres://user@db-host:5432/imagegen): {exc}") from None
    if not str(_listen.get("ENGINE", "")).endswith("postgresql"):
        raise ImproperlyConfigured(f"DATABASE_LISTEN_URL must be a postgres:// URL "
                                   f"(e.g. DATABASE_LISTEN_URL=postgres://user@db-host:5432/imagegen), "
                                   f"got {DATABASE_LISTEN_URL!r}")
    # Transaction pooling hands each transaction any server connection: a server-side cursor
    # (declared in one, fetched in the next) would not be there. (Prepared statements, the
    # other casualty, stay off: Django's psycopg backend does not prepare unless told to, and
    # the submit's statement is PREPAREd only while DATABASE_LISTEN_URL is unset:
    # generation.models.creation.)
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
