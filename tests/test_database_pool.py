"""The pool (config/postgres, config/env.py): its health check is free for a live connection and
still refuses one the server ended; a freshly started web process has its connections open
before its first request."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.db.backends.postgresql.psycopg_any import BaseTzLoader
from psycopg_pool import ConnectionPool

from config.postgres.base import FastTzLoader, check_connection
from tests import stack
from tests.conftest import ServiceClient, refund_body
from tests.execution_support import database_url
from tests.live_app import any_free_port

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
    # Until the notification reaches idle's socket (a fixed sleep is too short on a loaded machine).
    assert select.select([idle.pgconn.socket], [], [], 10)[0], "no notification within 10 s"
    assert "Query" in _sent_during(idle, lambda: check_connection(idle))
    assert _sent_during(idle, lambda: check_connection(idle)) == ""  # read: quiet again


@pytest.mark.skipif(
    not settings.DATABASES["default"]["OPTIONS"].get("pool"), reason="pool turned off"
)
def test_the_pool_uses_it() -> None:
    assert connection.pool._check is check_connection  # type: ignore[attr-defined]
    assert os.environ.get("DATABASE_URL", "").startswith("postgres")


# Text as PostgreSQL sends timestamptz in the session's ISO style, across the edges of the format.
TIMESTAMPS = [
    "2026-11-30 18:33:08.123456+00",
    "2026-11-30 18:33:08+00",
    "2000-01-01 00:00:00.5+00",
    "2024-02-29 12:00:00+05:30",
    "1999-01-08 04:05:06-08",
    "1883-11-18 12:00:00+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
]


def test_timestamps_are_parsed_by_psycopgs_own_loader_and_read_as_django_reads_them(db) -> None:
    """Django's loader parses every timestamp in Python; ours parses it with the loader psycopg
    registered (its compiled one where installed) and gives what Django's gives."""
    with connection.cursor() as cursor:
        oid = psycopg.adapters.types["timestamptz"].oid
        ours = cursor.connection.adapters.get_loader(oid, psycopg.pq.Format.TEXT)
        assert ours is not None and issubclass(ours, FastTzLoader)
        assert ours.timezone is connection.timezone
        registered = psycopg.adapters.get_loader(oid, psycopg.pq.Format.TEXT)
        assert registered is not None
        if psycopg.pq.__impl__ in {"c", "binary"}:
            assert registered.__module__.startswith(("psycopg_binary", "psycopg_c"))
        assert isinstance(ours(oid, cursor.connection)._parse.__self__, registered)

        class Djangos(BaseTzLoader):
            timezone = connection.timezone

        djangos = Djangos(oid, cursor.connection)
        cursor.execute(
            "SELECT v::timestamptz, v::timestamptz::text FROM unnest(%s::text[]) AS v",
            [TIMESTAMPS],
        )
        rows = cursor.fetchall()
    assert len(rows) == len(TIMESTAMPS)
    for value, text in rows:
        expected = djangos.load(text.encode())
        assert value == expected and value.tzinfo is expected.tzinfo is connection.timezone
        assert value.utcoffset() == expected.utcoffset()


class SlowAccept:
    """A TCP relay to PostgreSQL that holds each new connection `delay` seconds before passing
    it on, as a server that is slow to accept under load; bytes then flow untouched."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.target, self.delay = (host, port), delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        time.sleep(self.delay)
        upstream = socket.create_connection(self.target)
        self.sockets += [client, upstream]
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.mark.slow
def test_a_freshly_started_web_process_answers_a_burst_without_waiting_for_connections(
    transactional_db: None, shop: ServiceClient, tmp_path: Path
) -> None:
    """Each connection takes 0.5 s to open, longer than a request may wait for one: the web
    process has them all open before its first request, so a burst of one request per thread
    is answered 201, none 503. (With the pool opened by the first request, at one connection
    grown one by one, every request of the burst waited and got 503.)"""
    db = settings.DATABASES["default"]
    relay = SlowAccept(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432), delay=0.5)
    port = any_free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url().replace(f":{db['PORT'] or 5432}/", f":{relay.port}/"),
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "WEB_THREADS": "8",
        "DB_POOL_TIMEOUT": "0.3",
        "DEBUG": "0",
        "SECRET_KEY": "pool-" + "secret-" * 8,
        "ALLOWED_HOSTS": "127.0.0.1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    web = stack.Process("web", stack.procfile()["web"], env=env, logdir=tmp_path).start()
    base = f"http://127.0.0.1:{port}"
    try:
        stack.wait_for_http(f"{base}/healthz", seconds=60, process=web)
        start = threading.Barrier(8)

        def submit(n: int) -> int:
            start.wait()
            return httpx.post(
                f"{base}/api/v1/proposals",
                json=refund_body(external_id=f"burst-{n}"),
                headers={"Authorization": f"Bearer {shop.key}"},
                timeout=30,
            ).status_code

        with ThreadPoolExecutor(8) as threads:
            statuses = list(threads.map(submit, range(8)))
    finally:
        web.stop()
        relay.close()
    assert statuses == [201] * 8, web.log()[-3000:]
