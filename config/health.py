"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import json

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

# SQLSTATE classes that mean "the server is not there": 08 connection exception, 57P01-57P03
# admin/crash shutdown and "cannot connect now" (starting up or shutting down).
_DB_DOWN_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def backing_service_down(exc: BaseException) -> str | None:
    """ "database" or "redis" when `exc` says that service is unreachable, else None."""
    import psycopg
    import psycopg_pool
    import redis.exceptions
    from kombu.exceptions import OperationalError as BrokerError

    for error in _chain(exc):
        if isinstance(error, psycopg_pool.PoolTimeout | psycopg.InterfaceError):
            return "database"
        if isinstance(error, psycopg.OperationalError):
            sqlstate = error.sqlstate or ""
            if not sqlstate or sqlstate.startswith(_DB_DOWN_SQLSTATES):
                return "database"
        if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return "redis"
        if isinstance(error, BrokerError):
            return "redis"
    return None


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and serving requests."""
    return HttpResponse('{"status":"ok"}', content_type="application/json")


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        # Hand no dead connection back to the pool for the next request.
        connection.close_if_unusable_or_obsolete()
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_redis() -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
        )
        client.ping()
        client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """Ready to take traffic: the database answers and, when configured, Redis does too.
    Otherwise 503, with `down` naming what is unreachable and `checks` the error of each."""
    checks = {"database": _check_database()}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis()
    down = [name for name, error in checks.items() if error is not None]
    body = {
        "status": "unavailable" if down else "ok",
        "down": down,
        "checks": {name: error or "ok" for name, error in checks.items()},
    }
    response = HttpResponse(
        json.dumps(body), status=503 if down else 200, content_type="application/json"
    )
    if down:
        response["Retry-After"] = str(settings.UNAVAILABLE_RETRY_AFTER)
    return response
