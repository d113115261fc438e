"""The pool's health check (config/postgres): free for a live connection, and a connection the
server ended is still found and refused before anyone gets it."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from psycopg_pool import ConnectionPool

from config.postgres.base import check_connection

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the pool is PostgreSQL's"
)


def _url() -> str:
    db = settings.DATABASES["default"]
    return f"postgresql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/postgres"


@pytest.fixture
def idle() -> Iterator[psycopg.Connection]:
    with psycopg.connect(_url(), autocommit=True) as conn:
        yield conn


def _sent_during(conn: psycopg.Connection, action: object) -> str:
    """What libpq sent and received on `conn` while `action()` ran (its protocol trace)."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            action()  # type: ignore[operator]
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        return trace.read()


def test_a_live_idle_connection_is_handed_out_without_a_round_trip(
    idle: psycopg.Connection,
) -> None:
    assert _sent_during(idle, lambda: check_connection(idle)) == ""
    # Django's own check, for contrast, asks the server.
    assert "Query" in _sent_during(idle, lambda: ConnectionPool.check_connection(idle))


def test_a_connection_the_server_ended_is_refused(idle: psycopg.Connection) -> None:
    with psycopg.connect(_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [idle.info.backend_pid])
    deadline = time.monotonic() + 5
    with pytest.raises(psycopg.OperationalError):
        while time.monotonic() < deadline:  # the FATAL message is on its way
            check_connection(idle)
            time.sleep(0.01)


def test_a_connection_with_anything_to_read_gets_the_full_check(
    idle: psycopg.Connection,
) -> None:
    idle.execute("LISTEN gatehouse_pool_test")
    with psycopg.connect(_url(), autocommit=True) as other:
        other.execute("NOTIFY gatehouse_pool_test")
    time.sleep(0.2)  # the notification reaches idle's socket
    assert "Query" in _sent_during(idle, lambda: check_connection(idle))
    assert _sent_during(idle, lambda: check_connection(idle)) == ""  # read: quiet again


@pytest.mark.skipif(
    not settings.DATABASES["default"]["OPTIONS"].get("pool"), reason="pool turned off"
)
def test_the_pool_uses_it() -> None:
    assert connection.pool._check is check_connection  # type: ignore[attr-defined]
    assert os.environ.get("DATABASE_URL", "").startswith("postgres")
