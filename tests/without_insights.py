"""Approvals' own tests, run without insights (tests/approvals/test_without_insights.py), in a
background process started as soon as collection ends.

That run takes minutes and mostly waits (servers, sockets, sleeps), so it overlaps the rest of
the suite instead of following it: tests/conftest.py starts it when the test that asserts its
result is selected, moves that test to the end, and stops the run at the end of the session.
It is niced (the main suite's timed tests come first; at load 10 on 2 cores it took 795 s,
well within the rest of the suite) and has everything of its own: a PostgreSQL database
(pytest-django's `test_<name>_without_insights_suite`, so advisory locks and NOTIFY channels
are apart), a Redis database number (TEST_REDIS_URL_WITHOUT_INSIGHTS, else the suite's number
+ 8 modulo 16: the proposal-changed pub/sub channel carries the database name, the channel
layer's and Celery's keys live in the numbered database) and a pytest base temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = "tests.settings_without_insights"
NODE_ID = "tests/approvals/test_without_insights.py::test_approvals_own_tests_pass_without_insights"
TIMEOUT = 3600.0


def _redis_url(url: str) -> str:
    if os.environ.get("TEST_REDIS_URL_WITHOUT_INSIGHTS"):
        return os.environ["TEST_REDIS_URL_WITHOUT_INSIGHTS"]
    if not url:
        return url
    parts = urlsplit(url)
    number = int(parts.path.lstrip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(number + 8) % 16}"))


class Run:
    """`python -m pytest tests/approvals --ds=tests.settings_without_insights` in the background."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gatehouse-without-insights-"))
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "REDIS_URL": _redis_url(os.environ.get("REDIS_URL", "")),
        }
        self.admin: str | None = None
        self.test_database = ""
        url = os.environ.get("DATABASE_URL", "")
        parts = urlsplit(url)
        if parts.scheme.startswith("postgres"):
            name = parts.path.lstrip("/") + "_without_insights_suite"
            self.env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + name))
            self.admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
            self.test_database = "test_" + name
        else:
            self.env["DATABASE_URL"] = f"sqlite:///{self.dir / 'without-insights.sqlite3'}"
        self.output = self.dir / "output.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Run:
        self._drop_database()
        self._flush_redis()
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "tests/approvals",
                    f"--ds={SETTINGS}",
                    "--ignore=tests/approvals/test_without_insights.py",
                    f"--basetemp={self.dir / 'tmp'}",
                    "-p",
                    "no:cacheprovider",
                    "-q",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: os.nice(10),  # the main suite's timed tests come first
            )
        self.started = time.monotonic()
        return self

    def result(self) -> tuple[int, str]:
        """Wait for the run; its exit status and output."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=max(1.0, TIMEOUT - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -1
        return code, self.output.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drop_database()
        self._flush_redis()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _drop_database(self) -> None:
        if self.admin is not None:
            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.test_database}" WITH (FORCE)')

    def _flush_redis(self) -> None:
        if self.env["REDIS_URL"]:
            import redis

            client = redis.Redis.from_url(self.env["REDIS_URL"])
            try:
                client.flushdb()
            finally:
                client.close()
