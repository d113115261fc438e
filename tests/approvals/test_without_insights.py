"""Approvals does not need insights: with it left out of INSTALLED_APPS (tests/settings_without_insights.py)
the project starts (check, migrate) and approvals' own tests pass, each in a process of its own
(the latter runs in the background while the rest of the suite runs: tests/without_insights.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = "tests.settings_without_insights"
pytestmark = pytest.mark.slow


@pytest.fixture
def without_insights(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a process without insights, on a database of its own (dropped after)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS}
    url = os.environ.get("DATABASE_URL", "")
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'without-insights.sqlite3'}"
        yield env
        return
    name = parts.path.lstrip("/") + "_without_insights"
    env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + name))
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield env
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP DATABASE IF EXISTS "test_{name}" WITH (FORCE)')


def _run(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_project_starts_and_migrates_without_insights(without_insights: dict[str, str]) -> None:
    shown = _run(
        without_insights,
        "-c",
        "import django; django.setup(); from django.apps import apps; "
        "from django.conf import settings; "
        "print(apps.is_installed('insights'), settings.DECISION_CHECKS, settings.PAGE_PARTS)",
    )
    assert shown.strip() == "False [] {'banner': [], 'sections': []}"
    _run(without_insights, "manage.py", "check", "--fail-level", "WARNING")
    _run(without_insights, "manage.py", "migrate", "--noinput", "-v", "0")
    tables = _run(
        without_insights,
        "manage.py",
        "shell",
        "-c",
        "from django.db import connection; print(sorted(connection.introspection.table_names()))",
    )
    assert "approvals_proposal" in tables and "insights_" not in tables


def test_approvals_own_tests_pass_without_insights(approvals_without_insights: Any) -> None:
    # All of approvals' tests, in a process of their own started when collection ended
    # (tests/without_insights.py): this test runs last and collects the result (under
    # pytest-xdist it runs first on its worker and waits while the others run the rest).
    code, out = approvals_without_insights.result()
    assert code == 0, f"approvals' tests without insights failed:\n{out[-6000:]}"
    assert " passed" in out and "failed" not in out
