"""Fixtures the fault tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.private_servers import PrivateRedis


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, to stop and start (the shared one serves others)."""
    server = PrivateRedis().start()
    try:
        yield server
    finally:
        server.stop()
