"""A bad setting fails at start-up with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.env import parse_duration


def start_with(**env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**base, "SECRET_KEY": "x" * 50, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"DATABASE_URL": "mysql://localhost/x"}, "DATABASE_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"API_MAX_BODY_BYTES": "lots"}, "API_MAX_BODY_BYTES"),
        ({"IDEMPOTENCY_KEY_RETENTION": "forever"}, "IDEMPOTENCY_KEY_RETENTION"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"METRICS_TOKEN": "t" * 20}, "PROMETHEUS_MULTIPROC_DIR"),
        ({"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/metrics"}, "PROMETHEUS_MULTIPROC_DIR"),
        ({"LLMCALLS_LOG_RETENTION": "a month"}, "LLMCALLS_LOG_RETENTION"),
        ({"LLMCALLS_TRACE_CONTENT": "perhaps"}, "LLMCALLS_TRACE_CONTENT"),
        ({"DATABASE_URL": "postgres://u@127.0.0.1/x", "DB_POOL_MIN": "21"}, "DB_POOL_MIN"),
    ],
)
def test_a_bad_value_fails_at_start_naming_the_variable(env: dict[str, str], named: str) -> None:
    result = start_with(**env)
    assert result.returncode != 0
    assert named in result.stderr


def test_the_embedded_default_starts_without_any_server(tmp_path: object) -> None:
    result = start_with(DEBUG="1")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("24h", 86400), ("7d", 604800), ("500ms", 0.5), ("12", 12)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize(
    ("url", "ssl"),
    [
        ("rediss://cache.internal:6380/0", "CERT_REQUIRED"),
        ("rediss://cache.internal:6380/0?ssl_cert_reqs=none", "CERT_NONE"),
        ("redis://cache.internal:6379/0", "False"),
    ],
)
def test_the_broker_speaks_tls_to_a_rediss_url(url: str, ssl: str) -> None:
    """The broker's transport is named by class (config/broker.py), which kombu does not read
    as rediss: TLS must still be on, the certificate verified unless the URL says otherwise."""
    base = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "REDIS_URL"}}
    shown = (
        "from config.celery import app; c = app.connection_for_write(); "
        "print(c.transport_cls, getattr(c.ssl and c.ssl['ssl_cert_reqs'], 'name', c.ssl))"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", shown],
        env={**base, "DEBUG": "1", "REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["config.broker:Transport", ssl]
