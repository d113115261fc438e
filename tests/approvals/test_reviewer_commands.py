"""create_reviewer and simulate_service."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from approvals import schemas_cache, selectors
from approvals.management.commands.simulate_service import make_proposal
from approvals.models import ActionType
from foundation import configfile


@pytest.fixture
def demo_types(db: None) -> dict[str, ActionType]:
    path = Path(settings.BASE_DIR) / "config" / "demo.yaml"
    configfile.apply(path.read_text(), source=str(path))
    return {t.key: t for t in ActionType.objects.all()}


def test_create_reviewer_reads_the_password_from_stdin(
    demo_types: dict[str, ActionType], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password-1\n"))
    out = io.StringIO()
    call_command(
        "create_reviewer", "nina", "--action-types", "refund.issue", "--password-stdin", stdout=out
    )
    user = User.objects.get(username="nina")
    assert user.check_password("a-long-password-1")
    assert "Password" not in out.getvalue()
    # the demo's support group has refunds only: emails are the comms team's
    assert {t.key for t in selectors.visible_action_types(user=user)} == {"refund.issue"}


def test_create_reviewer_makes_a_group_for_a_type_without_one(
    demo_types: dict[str, ActionType],
) -> None:
    ActionType.objects.filter(key="account.close").update(reviewer_group=None)
    out = io.StringIO()
    call_command("create_reviewer", "tom", "--action-types", "account.close", stdout=out)
    assert "reviewers:account.close" in out.getvalue()
    assert "Password (shown once): " in out.getvalue()
    tom = User.objects.get(username="tom")
    assert [t.key for t in selectors.visible_action_types(user=tom)] == ["account.close"]


def test_create_reviewer_refuses_unknown_types(demo_types: dict[str, ActionType]) -> None:
    with pytest.raises(CommandError, match="Unknown action types: nope"):
        call_command("create_reviewer", "x", "--action-types", "nope")
    assert not User.objects.filter(username="x").exists()


def test_simulated_proposals_match_the_demo_schemas(demo_types: dict[str, ActionType]) -> None:
    rng = random.Random(7)
    kinds: set[str] = set()
    hostile = 0
    for i in range(300):
        body: dict[str, Any] = make_proposal(rng, hostile=i % 10 == 0)
        kinds.add(body["action_type"])
        errors = schemas_cache.validate_payload(demo_types[body["action_type"]], body["payload"])
        assert errors == [], (body, errors)
        assert 0 <= body["confidence"] <= 1 and 0 < len(body["summary"]) <= 200
        hostile += "<" in body["rationale"]
    assert kinds == {"refund.issue", "email.send", "account.close"}
    assert hostile >= 30


def test_demo_yaml_is_what_the_simulator_was_written_against() -> None:
    data = yaml.safe_load((Path(settings.BASE_DIR) / "config" / "demo.yaml").read_text())
    assert {t["key"] for t in data["action_types"]} >= {
        "refund.issue",
        "email.send",
        "account.close",
    }
