"""Identifiers that keep new rows together in their indexes.

A random (version 4) UUID as a primary key sends each new row to a random leaf of the key's
index, and of every index that leads with it (the audit events' `(proposal, id)`): on a table of
a million rows, each insert touches index pages nobody touched since the last checkpoint, and
PostgreSQL writes a full-page image of each into the WAL (bench/README.md, growth.py: 13 to 15 KB of
WAL a submit on a million proposals against 4.7 KB on an empty database, and a slower submit).
A version 7 UUID (RFC 9562) starts with the Unix time in milliseconds, so the rows of a moment
share a few leaf pages, whatever the table's size; the other 74 bits are random, so an id is
still not guessable from another (it tells when it was made, which `created_at` tells anyway).
"""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """A version 7 UUID: 48 bits of Unix milliseconds, then 74 random bits (RFC 9562, 5.7)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    # version 7 in bits 76-79, variant 0b10 in bits 62-63 (RFC 9562, 4.1 and 4.2)
    value = value & ~(0xF << 76) | 7 << 76
    value = value & ~(0x3 << 62) | 0x2 << 62
    return uuid.UUID(int=value)


def uuid7_seconds(value: uuid.UUID) -> float | None:
    """When a version 7 UUID was made (Unix seconds, to the millisecond); None for another kind."""
    if value.version != 7:
        return None
    return (value.int >> 80) / 1000
