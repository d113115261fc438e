"""Small helpers that read settings from the environment and fail loudly on bad values."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}"
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number; got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {value}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> timedelta:
    """Parse `500ms`, `30s`, `15m`, `24h`, `7d` (a bare number is seconds)."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30s, 15m, 24h or 7d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def env_duration(name: str, default: str) -> timedelta:
    raw = os.environ.get(name, default)
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


def database_from_url(name: str, url: str, *, base_dir: Any, pool: bool) -> dict[str, Any]:
    """Turn DATABASE_URL into a Django DATABASES entry (PostgreSQL or SQLite)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme in {"postgres", "postgresql", "pgsql"}:
        options: dict[str, Any] = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if pool:
            max_size = env_int("DB_POOL_MAX", 20, minimum=1)
            # Connections the process opens at start and keeps. Beyond them psycopg_pool grows
            # one connection at a time while requests wait, so a burst against a fresh process
            # with one connection waited for each in turn and got 503s past DB_POOL_TIMEOUT; the
            # web process defaults this to its request threads (config/wsgi.py).
            min_size = env_int("DB_POOL_MIN", 1, minimum=0)
            if min_size > max_size:
                raise ImproperlyConfigured(
                    f"DB_POOL_MIN ({min_size}) must not be more than DB_POOL_MAX ({max_size}); "
                    "the web process defaults DB_POOL_MIN to WEB_THREADS"
                )
            options["pool"] = {
                "min_size": min_size,
                "max_size": max_size,
                # How long a request waits for a connection: short, so that a database that is
                # away answers 503 within about a second (foundation/unavailable.py).
                "timeout": env_float("DB_POOL_TIMEOUT", 1.0),
                # While the server is away the pool's background reconnection backs off (1, 2,
                # 4, 8 s …); giving it up after 2 s lets the next request start a fresh attempt,
                # so the first request after the server returns connects at once.
                "reconnect_timeout": 2.0,
            }
            options.setdefault("connect_timeout", "2")
        # Django disables prepared statements (for poolers in transaction mode); re-enabled the
        # way its backend offers, through OPTIONS. Only statements bound on the server are ever
        # prepared (approvals/bulk.py: the submit's INSERT), once per connection on first use,
        # so PostgreSQL parses and plans them once; Django's own queries bind on the client and
        # never are. DB_PREPARED_STATEMENTS=0 behind a pooler in transaction mode that does not
        # keep prepared statements (PgBouncer before 1.21 or without max_prepared_statements).
        options["prepare_threshold"] = 0 if env_bool("DB_PREPARED_STATEMENTS", True) else None
        return {
            "ENGINE": "config.postgres",
            "NAME": unquote(parts.path.lstrip("/")) or "gatehouse",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 0 if pool else 60,
            # With the pool, Django hands this to psycopg_pool as its `check`: a connection that
            # died with the old server (restart, failover) is found and replaced before it is
            # handed out, so no request fails on it (config/postgres: without a round trip
            # when the connection is fine).
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    if scheme == "sqlite":
        path = unquote(url.split("://", 1)[1]).lstrip("/") if "://" in url else ""
        if url.startswith("sqlite:////"):
            path = "/" + path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path or str(base_dir / "gatehouse.sqlite3"),
            # IMMEDIATE takes the write lock at BEGIN, so two writers queue instead of failing.
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    raise ImproperlyConfigured(
        f"{name} must start with postgres://, postgresql:// or sqlite://; got scheme {parts.scheme!r}"
    )
