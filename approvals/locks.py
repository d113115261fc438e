"""Transaction-scoped PostgreSQL advisory locks, beneath everything that decides or writes.

The automatic decision takes one per service and action type when a rule reads velocity figures
(approvals/decisions.py); the submit path takes one per idempotency key. Both are released at
commit or rollback, so nothing can leak a lock.
"""

from __future__ import annotations

import hashlib

from django.db import connection

# Waits for the lock of advisory_lock_key(parts) and holds it to the end of the transaction.
XACT_LOCK = "SELECT pg_advisory_xact_lock(%s)"


def advisory_lock_key(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def try_advisory_xact_lock(*parts: object) -> bool:
    """Take a transaction-scoped PostgreSQL advisory lock without waiting.

    On SQLite every write transaction already holds the database lock (BEGIN IMMEDIATE),
    so there is nothing more to take.
    """
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [advisory_lock_key(*parts)])
        return bool(cursor.fetchone()[0])


def advisory_xact_lock(*parts: object) -> None:
    """Take a transaction-scoped PostgreSQL advisory lock, waiting for it."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(XACT_LOCK, [advisory_lock_key(*parts)])
