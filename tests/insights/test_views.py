"""/insights/ pages, the banner, drafting a shadow rule with its backtest, lifting the brake."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.utils import timezone

from approvals.models import ActionType, Rule, RuleVersion
from insights.models import Alert, Brake, RuleDraft, TypeSettings
from tests.conftest import logged_in


@pytest.fixture
def admin_user(db: None) -> User:
    user = User.objects.create_superuser("ada", password="pw-ada-123456")
    user.groups.add(Group.objects.get_or_create(name="support")[0])
    return user


@pytest.fixture
def history(plant: Callable[..., Any]) -> None:
    at = timezone.now() - timedelta(hours=3)
    plant(100, "agreed", at=at, confidence=0.95)
    plant(98, "agreed", at=at, confidence=0.85)
    plant(2, "rejected", at=at, confidence=0.85)
    plant(40, "agreed", at=at, confidence=0.75)
    plant(10, "rejected", at=at, confidence=0.75)


def test_the_page_of_a_type_shows_agreement_calibration_and_the_suggestion(
    history: None, refund_type: ActionType, reviewer: User
) -> None:
    TypeSettings.objects.create(action_type=refund_type, error_target=0.05)
    response = logged_in(reviewer).get("/insights/refund.issue/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Agreement over time" in html and "Calibration" in html
    assert "confidence <strong>≥ 0.85</strong>" in html
    assert 'id="insights-data"' in html  # the chart data, as json_script
    assert "<script>" not in html  # no inline script: only static files
    assert "Draft a rule" not in html  # a reviewer may look, not act
    index = logged_in(reviewer).get("/insights/")
    assert index.status_code == 200 and "refund.issue" in index.content.decode()


def test_outsiders_get_404_and_reviewers_may_not_act(
    history: None, refund_type: ActionType, reviewer: User, outsider: User
) -> None:
    assert logged_in(outsider).get("/insights/refund.issue/").status_code == 404
    assert "refund.issue" not in logged_in(outsider).get("/insights/").content.decode()
    client = logged_in(reviewer)
    assert (
        client.post("/insights/refund.issue/draft-rule/", {"threshold": "0.85"}).status_code == 403
    )
    assert client.post("/insights/refund.issue/lift-brake/").status_code == 403
    assert client.get("/insights/refund.issue/draft-rule/").status_code == 405
    assert not Rule.objects.exists()


def test_draft_a_rule_creates_a_shadow_rule_with_its_backtest(
    history: None, refund_type: ActionType, admin_user: User
) -> None:
    TypeSettings.objects.create(action_type=refund_type, error_target=0.05)
    response = logged_in(admin_user).post(
        "/insights/refund.issue/draft-rule/", {"threshold": "0.85"}
    )
    assert response.status_code == 302

    rule = Rule.objects.get()
    assert (rule.mode, rule.outcome, rule.action_type) == ("shadow", "approve", refund_type)
    assert rule.when == "confidence >= 0.85"
    assert RuleVersion.objects.filter(rule=rule, version=1).exists()  # saved through rule_save
    draft = RuleDraft.objects.get()
    # 250 planted proposals, 200 at or above 0.85; of those, 2 were rejected by reviewers.
    assert draft.backtest["examined"] == 250
    assert draft.backtest["candidate_matched"] == 200
    assert draft.backtest["changed"] == 200  # review → approve, were it enforced
    assert draft.backtest["approved_but_reviewer_rejected_count"] == 2
    page = logged_in(admin_user).get("/insights/refund.issue/").content.decode()
    assert "Drafted rules" in page and "would auto-approve 2 that reviewers rejected" in page


def test_an_admin_lifts_the_brake_from_the_page_and_banners_show_alerts(
    refund_type: ActionType, admin_user: User, reviewer: User
) -> None:
    Brake.objects.create(
        action_type=refund_type, reason="planted", errors=5, audited=20, target=0.02
    )
    Alert.objects.create(kind="brake", action_type=refund_type, title="Refunds are braked")
    queue = logged_in(reviewer).get("/").content.decode()
    assert "insight-banner" in queue and "Refunds are braked" in queue
    admin_page = logged_in(admin_user).get("/admin/").content.decode()
    assert "Refunds are braked" in admin_page

    page = logged_in(admin_user).get("/insights/refund.issue/").content.decode()
    assert "Brake engaged" in page and "Lift the brake" in page
    response = logged_in(admin_user).post("/insights/refund.issue/lift-brake/", {"note": "fixed"})
    assert response.status_code == 302
    assert Brake.objects.get().lifted_by == admin_user
    assert "insight-banner" not in logged_in(reviewer).get("/").content.decode()


def test_alerts_are_acknowledged_by_who_sees_the_type_with_the_permission(
    refund_type: ActionType, reviewer: User, outsider: User
) -> None:
    alert = Alert.objects.create(kind="drift", action_type=refund_type, title="Drop")
    url = f"/insights/alerts/{alert.pk}/acknowledge/"
    assert logged_in(outsider).post(url).status_code == 404
    assert logged_in(reviewer).post(url).status_code == 403
    assert "Acknowledge</button>" not in logged_in(reviewer).get("/insights/").content.decode()
    _grant(reviewer, "acknowledge_alert")
    assert "Acknowledge</button>" in logged_in(reviewer).get("/insights/").content.decode()
    assert logged_in(reviewer).post(url).status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_by == reviewer


def _grant(user: User, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "https:///evil.example/",
        "javascript:alert(1)",
    ],
)
def test_acknowledging_never_redirects_off_the_site(
    refund_type: ActionType, admin_user: User, target: str
) -> None:
    alert = Alert.objects.create(kind="drift", action_type=refund_type, title="Drop")
    response = logged_in(admin_user).post(
        f"/insights/alerts/{alert.pk}/acknowledge/", {"next": target}
    )
    assert response.status_code == 302
    assert response["Location"] == "/insights/"


def test_acknowledging_follows_a_path_of_the_site(
    refund_type: ActionType, admin_user: User
) -> None:
    alert = Alert.objects.create(kind="drift", action_type=refund_type, title="Drop")
    response = logged_in(admin_user).post(
        f"/insights/alerts/{alert.pk}/acknowledge/", {"next": "/insights/refund.issue/?x=1"}
    )
    assert response["Location"] == "/insights/refund.issue/?x=1"


@pytest.mark.parametrize(
    ("path", "data", "codenames"),
    [
        (
            "settings",
            {"audit_percent": "0", "target_percent": "50"},
            ["change_typesettings"],
        ),
        ("draft-rule", {"threshold": "0.5"}, ["draft_rule", "add_rule"]),
        ("lift-brake", {"note": "x"}, ["lift_brake"]),
    ],
)
def test_staff_without_the_permission_cannot_act_on_insights(
    history: None,
    refund_type: ActionType,
    path: str,
    data: dict[str, str],
    codenames: list[str],
) -> None:
    # A staff user holding every other permission (here: the model providers' ones).
    staff = User.objects.create_user("sid", password="pw-sid-1234567", is_staff=True)
    staff.groups.add(Group.objects.get_or_create(name="support")[0])
    _grant(staff, "add_modelprovider", "change_modelprovider", "view_typesettings")
    Brake.objects.create(action_type=refund_type, reason="r", errors=3, audited=10, target=0.02)
    response = logged_in(staff).post(f"/insights/refund.issue/{path}/", data)
    assert response.status_code == 403
    assert not TypeSettings.objects.exists()
    assert not Rule.objects.exists()
    assert Brake.objects.get().engaged
    _grant(staff, *codenames)
    assert logged_in(staff).post(f"/insights/refund.issue/{path}/", data).status_code == 302


def test_settings_are_saved_by_an_admin(refund_type: ActionType, admin_user: User) -> None:
    logged_in(admin_user).post(
        "/insights/refund.issue/settings/",
        {"audit_percent": "2.5", "target_percent": "1", "brake_enabled": "on"},
    )
    config = TypeSettings.objects.get(action_type=refund_type)
    assert (config.audit_fraction, config.error_target, config.brake_enabled) == (0.025, 0.01, True)


def test_the_banner_shows_a_reviewer_the_open_alerts_of_their_own_types_only(
    refund_type: ActionType, reviewer: User, outsider: User
) -> None:
    billing = Group.objects.create(name="billing")
    credit = ActionType.objects.create(
        key="credit.grant", title="Grant credit", payload_schema={}, reviewer_group=billing
    )
    biller = User.objects.create_user("bill")
    biller.groups.add(billing)
    Alert.objects.create(kind="drift", action_type=refund_type, title="Refunds <b>drift</b>")
    Alert.objects.create(kind="brake", action_type=credit, title="Credit braked")
    Alert.objects.create(
        kind="drift", action_type=refund_type, title="Seen", acknowledged_at=timezone.now()
    )
    queue = logged_in(reviewer).get("/").content.decode()
    assert "insight-banner" in queue and "1 insight alert:" in queue
    assert 'href="/insights/refund.issue/">Refunds &lt;b&gt;drift&lt;/b&gt;</a>' in queue
    assert "Drift" in queue and "Credit braked" not in queue and "Seen" not in queue
    billing_queue = logged_in(biller).get("/").content.decode()
    assert 'href="/insights/credit.grant/">Credit braked</a>' in billing_queue
    assert "Refunds" not in billing_queue
    assert "insight-banner" not in logged_in(outsider).get("/").content.decode()
