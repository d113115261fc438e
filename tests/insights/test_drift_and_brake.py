"""Planted histories: drift alerts, the brake, and the drift webhook."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from approvals import services as approvals_services
from approvals.models import ActionType, Proposal
from foundation.errors import ApplicationError
from insights import services
from insights.models import Alert, Brake, TypeSettings
from tests.conftest import ServiceClient, refund_body
from tests.execution_support import Receiver, wait_until


@pytest.fixture
def daily(settings: Any) -> None:
    settings.INSIGHTS_WINDOW = timedelta(days=1)
    settings.INSIGHTS_MIN_VERDICTS = 30
    settings.INSIGHTS_DRIFT_ALPHA = 0.01
    settings.INSIGHTS_BRAKE_MIN_SAMPLES = 10


def test_a_planted_drop_raises_exactly_one_drift_alert(
    plant: Callable[..., Any], refund_type: ActionType, daily: None
) -> None:
    now = timezone.now()
    # 92% yesterday, 80% today (the "silent model update"), same model and prompt version.
    plant(184, "agreed", at=now - timedelta(hours=30))
    plant(16, "rejected", at=now - timedelta(hours=30))
    plant(160, "agreed", at=now - timedelta(hours=6))
    plant(40, "edited", at=now - timedelta(hours=6))
    # Another model of the same type holds steady: no alert for it.
    plant(90, "agreed", at=now - timedelta(hours=30), model="gpt-4.1")
    plant(90, "agreed", at=now - timedelta(hours=6), model="gpt-4.1")

    first = services.insights_check(now=now)
    again = services.insights_check(now=now + timedelta(minutes=5))
    later = services.insights_check(now=now + timedelta(hours=3))

    assert len(first.alerts) == 1
    assert again.alerts == [] and later.alerts == []
    alert = Alert.objects.get()
    assert (alert.kind, alert.model, alert.prompt_version) == ("drift", "gpt-4o-mini", "refunds@3")
    assert "92% to 80%" in alert.title
    assert alert.data["p_value"] < 0.01


def test_a_steady_history_raises_no_alert(
    plant: Callable[..., Any], refund_type: ActionType, daily: None
) -> None:
    now = timezone.now()
    plant(184, "agreed", at=now - timedelta(hours=30))
    plant(16, "rejected", at=now - timedelta(hours=30))
    plant(182, "agreed", at=now - timedelta(hours=6))
    plant(18, "rejected", at=now - timedelta(hours=6))
    assert services.insights_check(now=now).alerts == []
    assert not Alert.objects.exists()


def test_too_few_verdicts_raise_no_alert_however_large_the_drop(
    plant: Callable[..., Any], refund_type: ActionType, daily: None
) -> None:
    now = timezone.now()
    plant(20, "agreed", at=now - timedelta(hours=30))
    plant(20, "rejected", at=now - timedelta(hours=6))
    assert services.insights_check(now=now).alerts == []


@pytest.mark.django_db(transaction=True)
def test_the_drift_alert_is_sent_as_a_signed_webhook(
    plant: Callable[..., Any],
    refund_type: ActionType,
    daily: None,
    settings: Any,
    eager_tasks: None,
) -> None:
    receiver = Receiver().start()
    try:
        receiver.secret = approvals_services.webhook_secret_generate()
        settings.INSIGHTS_WEBHOOK_URL = receiver.url("/insights")
        settings.INSIGHTS_WEBHOOK_SECRET = receiver.secret
        now = timezone.now()
        plant(190, "agreed", at=now - timedelta(hours=30))
        plant(10, "rejected", at=now - timedelta(hours=30))
        plant(150, "agreed", at=now - timedelta(hours=6))
        plant(50, "rejected", at=now - timedelta(hours=6))
        services.insights_check(now=now)
        delivery = wait_until(lambda: receiver.of("/insights"), timeout=10, what="the webhook")[0]
        assert delivery.verified, delivery.error
        assert delivery.json["type"] == "insight.drift"
        assert delivery.json["data"]["action_type"] == "refund.issue"
        alert = Alert.objects.get()
        assert delivery.webhook_id == f"insight_{alert.pk}"
        assert wait_until(
            lambda: Alert.objects.get().webhook_status == "delivered", timeout=5, what="status"
        )
    finally:
        receiver.stop()


# --- the brake -------------------------------------------------------------------------------


@pytest.fixture
def auto_approve(make_rule: Callable[..., Any], refund_type: ActionType) -> None:
    make_rule("small refunds", action_type=refund_type, when="payload.amount < 100.0")


def test_the_brake_engages_on_audited_errors_above_target_and_an_admin_lifts_it(
    plant: Callable[..., Any],
    refund_type: ActionType,
    shop: ServiceClient,
    auto_approve: None,
    daily: None,
) -> None:
    TypeSettings.objects.create(action_type=refund_type, error_target=0.02)
    now = timezone.now()
    assert (
        approvals_services.proposal_submit(service=shop.service, data=refund_body()).proposal.state
        == "approved"
    )

    # 5 of 20 audited automatic approvals were wrong: at least 11.7% with 95% confidence.
    plant(15, "agreed", at=now - timedelta(hours=2), audited=True)
    plant(5, "rejected", at=now - timedelta(hours=2), audited=True)
    result = services.insights_check(now=now)

    assert len(result.brakes) == 1
    brake = Brake.objects.get()
    assert brake.engaged and (brake.errors, brake.audited) == (5, 20)
    assert Alert.objects.filter(kind="brake").count() == 1
    held = approvals_services.proposal_submit(service=shop.service, data=refund_body()).proposal
    assert held.state == "pending_review"
    assert "suspended (brake)" in held.decision_reason
    assert held.rule_trace[-1]["rule"] == "brake"
    # Checking again neither engages a second brake nor raises a second alert.
    assert services.insights_check(now=now + timedelta(minutes=5)).brakes == []

    reviewer = User.objects.create_user("rev", password="x")
    with pytest.raises(ApplicationError):
        services.brake_lift(action_type=refund_type, user=reviewer)
    staff = User.objects.create_user("staff", password="x", is_staff=True)
    with pytest.raises(ApplicationError):  # staff is not enough: it takes the permission
        services.brake_lift(action_type=refund_type, user=staff)
    admin = User.objects.create_user("boss", password="x")
    admin.user_permissions.add(Permission.objects.get(codename="lift_brake"))
    admin = User.objects.get(pk=admin.pk)  # a fresh permission cache
    services.brake_lift(action_type=refund_type, user=admin, note="prompt rolled back")

    brake.refresh_from_db()
    assert brake.lifted_by == admin and not brake.engaged
    assert not Alert.objects.filter(acknowledged_at__isnull=True).exists()
    resumed = approvals_services.proposal_submit(service=shop.service, data=refund_body()).proposal
    assert resumed.state == "approved"
    # The audits that engaged it predate the lift: they do not engage it again.
    assert services.insights_check(now=timezone.now()).brakes == []


def test_audits_within_target_leave_automatic_approval_alone(
    plant: Callable[..., Any], refund_type: ActionType, daily: None
) -> None:
    TypeSettings.objects.create(action_type=refund_type, error_target=0.05)
    plant(40, "agreed", at=timezone.now() - timedelta(hours=2), audited=True)
    plant(1, "rejected", at=timezone.now() - timedelta(hours=2), audited=True)
    assert services.insights_check().brakes == []
    assert not Brake.objects.exists()


def test_a_brake_can_be_switched_off_per_type(
    plant: Callable[..., Any], refund_type: ActionType, daily: None
) -> None:
    TypeSettings.objects.create(action_type=refund_type, error_target=0.02, brake_enabled=False)
    plant(10, "rejected", at=timezone.now() - timedelta(hours=2), audited=True)
    assert services.insights_check().brakes == []


def test_only_approvals_are_held_back(refund_type: ActionType, shop: ServiceClient) -> None:
    Brake.objects.create(action_type=refund_type, reason="test", errors=1, audited=1, target=0.1)
    proposal = approvals_services.proposal_submit(service=shop.service, data=refund_body()).proposal
    assert proposal.state == Proposal.State.PENDING_REVIEW
    assert all(step.get("rule") != "brake" for step in proposal.rule_trace)
