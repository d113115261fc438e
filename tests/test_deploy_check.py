"""`manage.py check --deploy` is clean with production settings."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings


def test_check_deploy_passes_with_production_settings() -> None:
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "k" * 20 + "-production-like-secret-with-enough-entropy-8f3a9c2e7d",
        "ALLOWED_HOSTS": "gatehouse.example.com",
        "SECURE_SSL_REDIRECT": "1",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
