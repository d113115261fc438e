"""Gatehouse settings. Every value comes from the environment; see README "Configuration"."""

from __future__ import annotations

import ssl
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from redis.connection import parse_url

from config.env import (
    database_from_url,
    env_bool,
    env_duration,
    env_float,
    env_int,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-for-DEBUG"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "ninja",
    "django_htmx",
    "channels",
    "telemetry",
    "approvals",
    "llmcalls",
    "evals",
    "insights",
    "notify",
    "mcpgate",
    "axes",
]

MIDDLEWARE = [
    "telemetry.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "foundation.unavailable.BackingServiceMiddleware",
    "approvals.middleware.ContentSecurityPolicyMiddleware",
    # The model-call proxy's and the API's paths go from here straight to their views
    # (foundation/dispatch.py, DIRECT_DISPATCH below).
    "foundation.dispatch.DirectDispatchMiddleware",
    # config.middleware: Django's and whitenoise's own, skipped for /api/ and /llm/v1/.
    "config.middleware.WhiteNoiseMiddleware",
    "config.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.middleware.CsrfViewMiddleware",
    "config.middleware.AuthenticationMiddleware",
    "config.middleware.HtmxMiddleware",
    "config.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.AxesMiddleware",
]

# Path prefix -> the views (`namespace:name` prefixes) that foundation.dispatch hands requests
# to directly, past URL resolving and the middleware after it: arg-less views only.
DIRECT_DISPATCH = {"/api/v1/": ("api:",), "/llm/v1/": ("llmcalls:proxy-",)}


def app_contributions(installed_apps: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """What the optional apps above approvals plug into it, for the apps installed:
    DECISION_CHECKS, the automatic decision's policy checks (approvals/decisions.py: dotted
    paths, in order, like MIDDLEWARE), and PAGE_PARTS, templates its pages include per slot
    (approvals/templatetags/gatehouse.py `page_parts`). Approvals imports none of them."""
    checks: list[str] = []
    parts: dict[str, list[str]] = {"banner": [], "sections": []}
    if "insights" in installed_apps:
        checks += ["insights.gate.brake", "insights.gate.audit_sample"]
        parts["banner"].append("insights/_page_banner.html")
        parts["sections"].append("insights/_section_link.html")
    return checks, parts


DECISION_CHECKS, PAGE_PARTS = app_contributions(INSTALLED_APPS)

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

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

# Database: PostgreSQL in production (pooled psycopg 3), an SQLite file by default.
DATABASE_URL = env_str("DATABASE_URL", "")
DATABASES = {
    "default": database_from_url(
        "DATABASE_URL",
        DATABASE_URL or f"sqlite:///{BASE_DIR / 'gatehouse.sqlite3'}",
        base_dir=BASE_DIR,
        pool=env_bool("DB_POOL", True),
    )
}
# While PostgreSQL or Redis is unreachable every request answers 503 with this Retry-After
# (seconds) instead of waiting; see foundation/unavailable.py and docs/operations.md.
UNAVAILABLE_RETRY_AFTER = env_int("UNAVAILABLE_RETRY_AFTER", 5, minimum=1)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: cache (and, in later parts, the Celery broker and the channel layer) when set.
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        f"REDIS_URL must start with redis://, rediss:// or unix://; got {REDIS_URL!r}"
    )
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A Redis that is away must fail a request fast (503), not hang it.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sign-in throttling on /login/ and /admin/login/ (django-axes, approvals/logins.py): after
# LOGIN_FAILURE_LIMIT failures for one username or from one address, 429 for LOGIN_LOCKOUT.
AUTHENTICATION_BACKENDS = [
    "approvals.logins.LoginThrottleBackend",
    # Answers has_perm from one statement; ModelBackend signs in and loads the session's user.
    "foundation.permissions.PermissionBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = env_duration("LOGIN_LOCKOUT", "15m")
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "approvals/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "approvals.logins.client_address"
AXES_VERBOSE = False
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "staticfiles")  # collectstatic writes here
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# Live updates (Channels): Redis carries broadcasts between processes when REDIS_URL is set.
# Without it the layer is in-memory, per process; the web process then relays changes made by
# other processes (the worker) by tailing the audit table (approvals/relay.py, docs/live-updates.md).
CHANNEL_LAYERS = {
    "default": (
        {
            # Pub/sub: a group_send is one PUBLISH, and each process that has sockets in the
            # group gets it once and hands it to them in memory. The list-based layer wrote one
            # copy per socket, each read back with its own round trip (50 sockets at 100
            # proposals/s: 5,000 a second through one process), and dropped what overflowed its
            # per-channel capacity (bench/README.md, live_latency.py --load). Pub/sub ignores
            # the database number, so it is part of the prefix: two installations on one Redis
            # do not see each other's pushes (as approvals/events.changes_channel()).
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": f"gatehouse:ws:{parse_url(REDIS_URL).get('db', 0)}:",
            },
        }
        if REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}
# How long opening a proposal reserves it for one reviewer; the open page renews it.
REVIEW_CLAIM_TTL = env_duration("REVIEW_CLAIM_TTL", "5m")
REVIEW_QUEUE_PAGE_SIZE = env_int("REVIEW_QUEUE_PAGE_SIZE", 50, minimum=1)
# Content-Security-Policy for every response: no inline script, no eval, nothing third-party.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

# Request bodies: the API refuses anything larger with 413.
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 256 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES + 1024

# Security headers; HTTPS-only cookies and HSTS when not in DEBUG.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY") else None
)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Preloading commits the whole domain to HTTPS in browsers for months: the operator opts in
# with SECURE_HSTS_PRELOAD; `check --deploy` should not nag everyone else about it.
# security.W003 looks for the string "django.middleware.csrf.CsrfViewMiddleware" in MIDDLEWARE;
# config.middleware.CsrfViewMiddleware is that class, skipped only on the key-authenticated
# /api/ and /llm/v1/ paths (no cookies there), and pages still refuse a POST without the token
# (tests/approvals/test_views.py).
# axes.W002 likewise looks for "axes.middleware.AxesMiddleware"; config.middleware's is that
# class, skipped on the same paths (tests/approvals/test_logins.py: sign-ins are still throttled).
SILENCED_SYSTEM_CHECKS = ["security.W021", "security.W003", "axes.W002"]

# Gatehouse itself.
IDEMPOTENCY_KEY_RETENTION = env_duration("IDEMPOTENCY_KEY_RETENTION", "24h")
LONG_POLL_MAX_SECONDS = env_int("LONG_POLL_MAX_SECONDS", 30, minimum=0)
# How often an open reviewer socket re-reads its session: one that expired or became invalid
# is closed (4401) within this long. Logging out closes the sockets at once.
LIVE_SESSION_CHECK_SECONDS = env_float("LIVE_SESSION_CHECK_SECONDS", 60.0)
if LIVE_SESSION_CHECK_SECONDS <= 0:
    raise ImproperlyConfigured("LIVE_SESSION_CHECK_SECONDS must be more than 0")
# Rules (docs/rules.md): the evaluation budget per proposal (beyond it: review), and whether each
# process LISTENs for rule changes instead of checking the database on every proposal.
RULES_TIME_BUDGET_MS = env_int("RULES_TIME_BUDGET_MS", 100, minimum=1)
RULES_LISTEN = env_bool("RULES_LISTEN", True)

# Model calls (llmcalls): retries, circuit breaker, how long routes and prices stay in memory.
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2, minimum=0)
LLM_BACKOFF_BASE = env_float("LLM_BACKOFF_BASE", 0.25)
LLM_BACKOFF_CAP = env_float("LLM_BACKOFF_CAP", 8.0)
LLM_CONNECT_TIMEOUT = env_float("LLM_CONNECT_TIMEOUT", 5.0)
# Requests to providers on the lean HTTP/1.1 client (llmcalls/transport.py) where it applies (no
# environment proxy); off: every request through httpx2.
LLM_LEAN_HTTP = env_bool("LLM_LEAN_HTTP", True)
LLM_CIRCUIT_FAILURES = env_int("LLM_CIRCUIT_FAILURES", 5, minimum=1)
LLM_CIRCUIT_COOLDOWN = env_float("LLM_CIRCUIT_COOLDOWN", 30.0)
# How stale a process's copy of a circuit's state in Redis may be, in seconds (llmcalls/breaker.py).
LLM_CIRCUIT_REFRESH = env_float("LLM_CIRCUIT_REFRESH", 1.0)
LLM_CONFIG_TTL = env_float("LLM_CONFIG_TTL", 5.0)
# The semantic cache's in-process index reads entries other processes wrote at most this often
# (seconds); what it serves is checked against the table on every hit (llmcalls/semcache.py).
LLM_SEMANTIC_REFRESH = env_float("LLM_SEMANTIC_REFRESH", 1.0)
# Environment variables a model provider may take its key from besides GATEHOUSE_PROVIDER_*
# (docs/llmcalls.md); Gatehouse's own secrets are refused whatever this says.
LLM_PROVIDER_KEY_ENVS = env_list("LLM_PROVIDER_KEY_ENVS", [])
# Prompts and responses can hold personal data: their text is purged after this long (the
# numbers stay); a dotted path to a function(record) -> record redacts each call before it is
# stored, logged or traced; prompt and completion text goes into traces only when asked.
LLMCALLS_LOG_RETENTION = env_duration("LLMCALLS_LOG_RETENTION", "30d")
LLMCALLS_PURGE_INTERVAL = env_duration("LLMCALLS_PURGE_INTERVAL", "1h")
LLMCALLS_REDACT = env_str("LLMCALLS_REDACT", "")
LLMCALLS_TRACE_CONTENT = env_bool("LLMCALLS_TRACE_CONTENT", False)

# Evals: how many model calls one eval run makes at once.
EVALS_CONCURRENCY = env_int("EVALS_CONCURRENCY", 4, minimum=1)

# Logs (docs/operations.md, "Observability"): text or one JSON object a line, with the request
# id and the event's context; every line is scrubbed of credentials (telemetry/logs.py).
LOG_FORMAT = env_str("LOG_FORMAT", "text").strip().lower()
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json; got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "telemetry.logs.ContextFilter"}},
    "formatters": {
        "text": {
            "()": "telemetry.logs.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "telemetry.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        # One line per webhook comes from gatehouse.execution already.
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},  # the openai client's HTTP library
        # axes logs every failed sign-in at INFO; the lockout itself is a WARNING.
        "axes": {"level": "WARNING"},
    },
}

# Metrics (GET /metrics, Prometheus text format): off while METRICS_TOKEN is unset. Several
# processes (uvicorn workers, Celery) add up their counters through files in
# PROMETHEUS_MULTIPROC_DIR, which prometheus-client reads from the environment itself.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
if METRICS_TOKEN and not PROMETHEUS_MULTIPROC_DIR and not DEBUG:
    raise ImproperlyConfigured(
        "METRICS_TOKEN is set but PROMETHEUS_MULTIPROC_DIR is not: with several web and worker "
        "processes each would count alone. Point it at an empty directory (see docs/operations.md)."
    )
if PROMETHEUS_MULTIPROC_DIR and not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured(
        f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r} is not a directory"
    )

# Benchmarks only: mounts /bench/floor (see bench/api_submit.py). Never on in production.
BENCH_FLOOR_ENDPOINT = env_bool("BENCH_FLOOR_ENDPOINT", False)

# Per-process cache of API keys and action types on the submit path. A revoked key or an edited
# action type takes effect at once in the process that changed it and within this many seconds
# in every other process. 0 turns the cache off.
HOT_PATH_CACHE_SECONDS = env_float("HOT_PATH_CACHE_SECONDS", 5.0)

# Execution, decision callbacks and periodic jobs (Celery). See docs/operations.md.
# The broker is Redis when REDIS_URL is set; otherwise a folder on disk, which needs no server
# (the embedded default: web, worker and beat on one machine, started by `manage.py run_stack`).
BROKER_DIR = Path(env_str("BROKER_DIR", str(BASE_DIR / ".broker")))
CELERY_BROKER_URL = REDIS_URL or "filesystem://localhost/"
# kombu's Redis transport, except that a closing channel leaves the messages it held to the
# outbox reconciler: kombu 5.7's push-back could end the worker when Redis went away (broker.py).
if REDIS_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    # A transport named by its class loses kombu's reading of the rediss:// scheme: TLS, the
    # server's certificate verified unless the URL's ssl_cert_reqs says otherwise (redis-py's
    # default, as for the app's other Redis clients).
    if REDIS_URL.startswith("rediss://") and "ssl_cert_reqs=" not in REDIS_URL:
        CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = (
    {"socket_timeout": 5, "socket_connect_timeout": 2}
    if REDIS_URL
    else {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "polling_interval": 0.1,
    }
)
CELERY_BEAT_SCHEDULE_FILENAME = env_str("BEAT_SCHEDULE_FILE", str(BROKER_DIR / "beat-schedule"))
# Webhook and callback targets on private, loopback or link-local addresses are refused unless
# this is on (development and tests, which use loopback receivers).
GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS = env_bool("GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS", False)
# Every executor call and callback: its timeout, how many attempts, and the backoff between them.
EXECUTION_TIMEOUT = env_duration("EXECUTION_TIMEOUT", "10s")
EXECUTION_MAX_ATTEMPTS = env_int("EXECUTION_MAX_ATTEMPTS", 8, minimum=1)
EXECUTION_RETRY_BASE = env_duration("EXECUTION_RETRY_BASE", "2s")
EXECUTION_RETRY_MAX = env_duration("EXECUTION_RETRY_MAX", "10m")
# The reconciler re-dispatches outbox messages still due this long after they should have run.
OUTBOX_RECONCILE_INTERVAL = env_duration("OUTBOX_RECONCILE_INTERVAL", "15s")
OUTBOX_RECONCILE_GRACE = env_duration("OUTBOX_RECONCILE_GRACE", "30s")
EXPIRY_INTERVAL = env_duration("EXPIRY_INTERVAL", "30s")
# How often review SLAs are checked (a reminder at 80%, escalation when breached).
SLA_CHECK_INTERVAL = env_duration("SLA_CHECK_INTERVAL", "30s")
# A task that finds the database away holds its worker slot and waits up to this many seconds
# (never beyond its time limit) for it to return, so workers take no more work meanwhile.
WORKER_DATABASE_WAIT = env_float("WORKER_DATABASE_WAIT", 60.0)
IDEMPOTENCY_PURGE_INTERVAL = env_duration("IDEMPOTENCY_PURGE_INTERVAL", "1h")

# Insights (docs/insights.md): agreement windows, the drift job, and the optional drift webhook.
INSIGHTS_WINDOW = env_duration("INSIGHTS_WINDOW", "1d")
INSIGHTS_CHECK_INTERVAL = env_duration("INSIGHTS_CHECK_INTERVAL", "5m")
INSIGHTS_DRIFT_ALPHA = env_float("INSIGHTS_DRIFT_ALPHA", 0.01)
INSIGHTS_MIN_VERDICTS = env_int("INSIGHTS_MIN_VERDICTS", 30, minimum=1)
INSIGHTS_BRAKE_MIN_SAMPLES = env_int("INSIGHTS_BRAKE_MIN_SAMPLES", 10, minimum=1)
INSIGHTS_WEBHOOK_URL = env_str("INSIGHTS_WEBHOOK_URL", "")
INSIGHTS_WEBHOOK_SECRET = env_str("INSIGHTS_WEBHOOK_SECRET", "")
INSIGHTS_WEBHOOK_MAX_ATTEMPTS = env_int("INSIGHTS_WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)

# Notifications (notify/, docs/notifications.md). Slack is on when both SLACK_ values are set;
# SLACK_API_URL is the Web API's base (tests point it at loopback). Email is on when
# EMAIL_HOST is set (NOTIFY_EMAIL overrides); Django's EMAIL_* settings say how it is sent.
SLACK_BOT_TOKEN = env_str("SLACK_BOT_TOKEN", "")
SLACK_SIGNING_SECRET = env_str("SLACK_SIGNING_SECRET", "")
SLACK_API_URL = env_str("SLACK_API_URL", "https://slack.com/api/")
SLACK_TIMEOUT = env_duration("SLACK_TIMEOUT", "10s")
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "gatehouse@localhost")
NOTIFY_EMAIL = env_bool("NOTIFY_EMAIL", bool(EMAIL_HOST))
# How often digests are considered (each reviewer picks their own interval), and how often
# Slack cards and notices a lost task left behind are brought up to date.
NOTIFY_DIGEST_CHECK_INTERVAL = env_duration("NOTIFY_DIGEST_CHECK_INTERVAL", "1m")
NOTIFY_RECONCILE_INTERVAL = env_duration("NOTIFY_RECONCILE_INTERVAL", "1m")
# MCP (docs/mcp.md): how long a gateway call waits for a reviewer before answering with the
# proposal's id, how long an upstream may take, and for how long a repeated identical call is
# answered from the earlier proposal instead of proposing again.
MCP_GATEWAY_WAIT = env_duration("MCP_GATEWAY_WAIT", "30s")
MCP_UPSTREAM_TIMEOUT = env_duration("MCP_UPSTREAM_TIMEOUT", "30s")
MCP_GATEWAY_REPLAY_WINDOW = env_duration("MCP_GATEWAY_REPLAY_WINDOW", "10m")
MCP_PROGRESS_INTERVAL = env_float("MCP_PROGRESS_INTERVAL", 5.0)
if MCP_PROGRESS_INTERVAL <= 0:
    raise ImproperlyConfigured("MCP_PROGRESS_INTERVAL must be more than 0")
