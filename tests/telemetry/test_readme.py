"""The README's Prometheus scrape job and alert rules are valid for Prometheus's own checker."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = "/usr/bin/promtool"  # Debian's prometheus package (make test installs it)


def readme_yaml(marker: str) -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(block for block in blocks if marker in block)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.fail(f"{PROMTOOL} is missing: apt-get install -y prometheus")
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_three_alert_rules_are_valid(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(readme_yaml("groups:"))
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout
    for name in ("GatehouseReviewQueueStale", "GatehouseWebhooksFailing", "GatehouseBrakeEngaged"):
        assert name in rules.read_text()


def test_the_scrape_job_is_valid(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        readme_yaml("scrape_configs").replace("/etc/prometheus/gatehouse-token", str(token))
    )
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
