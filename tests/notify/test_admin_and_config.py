"""The admin and `apply` for notifications, and the layering: approvals never imports notify."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from approvals.admin import ActionTypeForm
from approvals.models import ActionType, AuditEvent
from foundation import configfile
from notify.models import GroupChannel, SlackLink

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def test_approvals_never_imports_notify() -> None:
    for path in (ROOT / "approvals").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "notify" or n.startswith("notify.") for n in names), path


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw-root-123456"))
    return client


def test_apply_sets_an_action_types_sla_escalation_and_redacted_fields() -> None:
    text = """
reviewer_groups:
  - name: leads
    slack_channel: C0LEADS
action_types:
  - key: refund.issue
    title: Issue a refund
    reviewer_group: support
    review_sla: 30m
    escalation_group: leads
    redacted_fields: [iban, customer.email]
"""
    configfile.apply(text)
    action_type = ActionType.objects.get(key="refund.issue")
    assert action_type.review_sla == timedelta(minutes=30)
    assert action_type.escalation_group == Group.objects.get(name="leads")
    assert action_type.redacted_fields == ["iban", "customer.email"]
    assert configfile.apply(text) == [
        "reviewer group leads: unchanged",
        "action type refund.issue: unchanged",
    ]
    with pytest.raises(configfile.ConfigFileError, match="review_sla"):
        configfile.parse("action_types:\n  - key: a.b\n    title: A\n    review_sla: soon\n")


def _type_form(**changes: Any) -> ActionTypeForm:
    data = {
        "key": "refund.issue",
        "title": "Refund",
        "payload_schema": '{"type": "object"}',
        "risk": "medium",
        "approvals_required": "1",
        "review_ttl": "1 00:00:00",
        "executor_kind": "none",
        "review_sla": "00:30:00",
        "escalation_group": str(Group.objects.get_or_create(name="leads")[0].pk),
        "redacted_fields": '["iban"]',
        **changes,
    }
    return ActionTypeForm(data=data)


def test_the_action_type_form_takes_sla_escalation_and_redacted_fields() -> None:
    form = _type_form()
    assert form.is_valid(), form.errors
    saved = form.save()
    assert saved.review_sla == timedelta(minutes=30) and saved.redacted_fields == ["iban"]
    assert _type_form(key="x.y", redacted_fields="").is_valid()
    bad = _type_form(key="x.z", redacted_fields='{"iban": true}')
    assert not bad.is_valid() and "redacted_fields" in bad.errors


def test_a_groups_admin_page_sets_its_slack_channel(admin_client: Client) -> None:
    group = Group.objects.create(name="support")
    url = f"/admin/auth/group/{group.pk}/change/"
    assert b"Slack channel" in admin_client.get(url).content
    response = admin_client.post(
        url,
        {
            "name": "support",
            "slack-TOTAL_FORMS": "1",
            "slack-INITIAL_FORMS": "0",
            "slack-MIN_NUM_FORMS": "0",
            "slack-MAX_NUM_FORMS": "1",
            "slack-0-slack_channel": "C0SUPPORT",
            "slack-0-group": str(group.pk),
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert GroupChannel.objects.get(group=group).slack_channel == "C0SUPPORT"


def test_linking_in_the_admin_goes_through_the_audited_service(admin_client: Client) -> None:
    rita = User.objects.create_user("rita")
    response = admin_client.post(
        "/admin/notify/slacklink/add/",
        {
            "user": str(rita.pk),
            "slack_user_id": "U0RITA",
            "method": "command",
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert SlackLink.objects.get(user=rita).slack_user_id == "U0RITA"
    assert AuditEvent.objects.filter(kind="reviewer.slack_linked").count() == 1
    refused = admin_client.post(
        "/admin/notify/slacklink/add/", {"user": str(rita.pk), "slack_user_id": "<b>"}
    )
    assert refused.status_code == 200 and b"A Slack user id such as" in refused.content
