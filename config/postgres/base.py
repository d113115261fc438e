"""Django's PostgreSQL backend, with the pool's health check made free for a healthy connection.

With CONN_HEALTH_CHECKS, Django gives psycopg_pool `ConnectionPool.check_connection` as its
`check`: an empty query before each connection is handed out, one round trip to PostgreSQL on
every request that touches the database. A server that goes away (restart, failover,
pg_terminate_backend) sends its connections a FATAL message and closes them, so a dead idle
connection has something to read or an end of file waiting; a live idle one has nothing. So here
an idle connection with nothing to read is handed out at once, and anything else gets the full
check and is replaced if it fails. `bench/api_submit.py --profile-stages` measured the round trip
(bench/README.md); tests/test_settings.py holds the behaviour. ENGINE = "config.postgres".

Timestamps are read by psycopg's compiled loader. Django registers, on every connection, a
timestamptz loader of its own that sets the connection's time zone on each value; it derives from
psycopg's pure-Python loader, so with psycopg[binary] every timestamp read was still parsed in
Python (4.9 µs against 0.6 µs here; Django ticket #36960, psycopg issue #1273). FastTzLoader does
the same with the compiled loader's parse. tests/test_database_pool.py holds it.
"""

from __future__ import annotations

import functools
import logging
import select
from typing import Any

from django.db import connections
from django.db.backends.postgresql import base
from django.db.backends.postgresql.psycopg_any import BaseTzLoader
from psycopg import adapt, adapters, pq
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

_WAITING = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


def check_connection(conn: Any) -> None:
    """Return if `conn` is fit to hand out; raise (psycopg's error) if it is not."""
    if conn.pgconn.transaction_status == pq.TransactionStatus.IDLE and not _has_input(conn):
        return
    ConnectionPool.check_connection(conn)


def _has_input(conn: Any) -> bool:
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, _WAITING)
        return bool(poller.poll(0))
    except Exception:  # no socket (closed): let the full check say why
        return True


# psycopg's own timestamptz text loader: the compiled one where psycopg's C implementation is
# installed (psycopg registers it in place of the Python class), else the Python one.
_TIMESTAMPTZ = adapters.types["timestamptz"].oid
_PSYCOPG_TZ_LOADER = adapters.get_loader(_TIMESTAMPTZ, pq.Format.TEXT)


class FastTzLoader(BaseTzLoader):
    """Django's BaseTzLoader (it is the class Django's cursors check for the time zone), parsing
    with psycopg's registered loader: the value, then the connection's time zone, as Django's."""

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self._parse = _PSYCOPG_TZ_LOADER(oid, context).load  # type: ignore[misc]

    def load(self, data: Any) -> Any:
        return self._parse(data).replace(tzinfo=self.timezone)


@functools.cache
def _adapters(template: adapt.AdaptersMap, timezone: Any) -> adapt.AdaptersMap:
    """Django's adapters for this time zone, with FastTzLoader for timestamptz."""
    context = adapt.AdaptersMap(template)
    loader = type("SpecificFastTzLoader", (FastTzLoader,), {"timezone": timezone})
    context.register_loader("timestamptz", loader)
    return context


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        if "context" in params:  # psycopg 3 (Django's template, cached per time zone)
            params["context"] = _adapters(params["context"], self.timezone)
        return params

    @property
    def pool(self) -> Any:
        pool = base.DatabaseWrapper.pool.fget(self)  # type: ignore[attr-defined]
        # Django builds the pool with check=ConnectionPool.check_connection (and refuses a
        # `check` of our own among the pool's options); swap in the cheaper one, once.
        if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
            pool._check = check_connection
        return pool


def open_pool(*, timeout: float) -> None:
    """Open the default database's pool and wait until it holds its `min_size` connections
    (DB_POOL_MIN), which psycopg_pool opens side by side; Django would open it at the first
    request and serve a burst from whatever was ready. A database that is not there within
    `timeout` does not stop the process: its requests answer 503 until it is, as ever."""
    wrapper: Any = connections["default"]
    pool = getattr(wrapper, "pool", None)
    if pool is None:  # SQLite, or DB_POOL=0
        return
    try:
        pool.open(wait=True, timeout=timeout)
    except PoolTimeout:
        log.warning(
            "the database pool is not full after %s s; opening it at the first request", timeout
        )
        wrapper.close_pool()  # psycopg closed it: let the first request build a new one
