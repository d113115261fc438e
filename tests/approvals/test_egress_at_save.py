"""Webhook, callback and provider URLs are checked when they are saved, not only when they are
called (issue 12): admin forms, `apply`, commands and the drift webhook setting, each naming the
field; GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS still allows private targets."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from approvals.models import ActionType, AuditEvent, Service
from foundation import configfile
from insights.checks import check_webhook_url
from llmcalls.models import Provider
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db

PRIVATE = [
    "http://127.0.0.1:9000/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[64:ff9b::7f00:1]/hook",
    "http://[::7f00:1]/hook",
    "http://[2002:a00:1::1]/hook",
]


@pytest.fixture
def superuser() -> Client:
    return logged_in(User.objects.create_superuser("root", password="pw-root-123456"))


@pytest.mark.parametrize("url", PRIVATE)
@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=False)
def test_create_service_refuses_a_private_callback_url(url: str) -> None:
    with pytest.raises(CommandError, match=r"callback_url is refused: .*private"):
        call_command("create_service", "shop", "--callback-url", url, stdout=StringIO())
    assert not Service.objects.exists()


@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=True)
def test_private_targets_stay_allowed_for_development() -> None:
    call_command("create_service", "shop", "--callback-url", PRIVATE[0], stdout=StringIO())
    assert Service.objects.get().callback_url == PRIVATE[0]
    configfile.parse(
        f"action_types:\n  - {{key: a.b, title: t, executor: {{kind: webhook, url: '{PRIVATE[0]}'}}}}\n"
    )


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            "action_types:\n  - {key: a.b, title: t, executor: {kind: webhook, url: '%s'}}\n",
            "url",
        ),
        ("llm_providers:\n  - {name: p, base_url: '%s'}\n", "base_url"),
    ],
)
@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=False)
def test_apply_refuses_a_private_url_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(configfile.ConfigFileError) as caught:
        configfile.parse(text % "http://[64:ff9b::a9fe:a9fe]/x")
    problems = "\n".join(caught.value.problems)
    assert field in problems and "is refused" in problems and "169.254.169.254" in problems
    assert not ActionType.objects.exists() and not Provider.objects.exists()


@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=False)
def test_the_admin_refuses_private_urls_on_services_action_types_and_providers(
    superuser: Client,
) -> None:
    response = superuser.post(
        "/admin/approvals/service/add/",
        {"name": "shop", "callback_url": "http://[::7f00:1]/cb", "is_active": "on"}
        | _no_inline_keys(),
    )
    assert response.status_code == 200
    assert "This callback URL is refused" in response.content.decode()
    assert not Service.objects.exists()

    response = superuser.post(
        "/admin/approvals/actiontype/add/",
        {
            "key": "a.b",
            "title": "t",
            "payload_schema": "{}",
            "risk": "low",
            "approvals_required": "1",
            "review_ttl": "1 00:00:00",
            "executor_kind": "webhook",
            "executor_target": "http://[64:ff9b::7f00:1]/x",
        },
    )
    assert "This webhook URL is refused" in response.content.decode()
    assert not ActionType.objects.exists()

    response = superuser.post(
        "/admin/llmcalls/provider/add/",
        {"name": "evil", "base_url": "http://[2002:7f00:1::1]/v1", "api_key_env": ""},
    )
    assert "This base URL is refused" in response.content.decode()
    assert not Provider.objects.exists()


@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=False, INSIGHTS_WEBHOOK_URL=PRIVATE[1])
def test_a_private_drift_webhook_url_fails_the_start_checks() -> None:
    [error] = check_webhook_url()
    assert error.id == "insights.E001" and "INSIGHTS_WEBHOOK_URL is refused" in error.msg


def _no_inline_keys() -> dict[str, str]:
    return {
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
        "api_keys-MIN_NUM_FORMS": "0",
        "api_keys-MAX_NUM_FORMS": "1000",
    }


# --- the webhook secret on the Service admin ---------------------------------------------------


def test_the_service_admin_shows_the_secret_once_at_creation_and_never_on_the_form(
    superuser: Client,
) -> None:
    response = superuser.post(
        "/admin/approvals/service/add/",
        {"name": "shop", "is_active": "on"} | _no_inline_keys(),
        follow=True,
    )
    service = Service.objects.get()
    assert service.webhook_secret.startswith("whsec_")
    assert service.webhook_secret in response.content.decode()  # once, in the message
    page = superuser.get(f"/admin/approvals/service/{service.pk}/change/").content.decode()
    assert service.webhook_secret not in page
    assert "whsec_" not in page


def test_rotating_the_secret_shows_the_new_one_once_and_is_audited(superuser: Client) -> None:
    call_command("create_service", "shop", stdout=StringIO())
    service = Service.objects.get()
    old = service.webhook_secret
    response = superuser.post(
        "/admin/approvals/service/",
        {"action": "rotate_webhook_secret", "_selected_action": [service.pk]},
        follow=True,
    )
    service.refresh_from_db()
    assert service.webhook_secret != old and service.previous_webhook_secret == old
    assert service.webhook_secret in response.content.decode()
    assert AuditEvent.objects.filter(kind="service.webhook_secret_rotated").count() == 1
    page = superuser.get(f"/admin/approvals/service/{service.pk}/change/").content.decode()
    assert not re.search(r"whsec_[A-Za-z0-9+/=]{8,}", page)
    superuser.post(
        "/admin/approvals/service/",
        {"action": "finish_rotation", "_selected_action": [service.pk]},
    )
    service.refresh_from_db()
    assert service.previous_webhook_secret == ""
    assert AuditEvent.objects.filter(kind="service.webhook_rotation_finished").count() == 1
