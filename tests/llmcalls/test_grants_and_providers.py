"""Granting features (create_service, `apply`, the admin) and where a provider's key may come
from and go to (issue 12, items 1 and 4)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client

from approvals.models import ActionType, AuditEvent, Service
from foundation import configfile
from foundation.configfile import ConfigFileError
from llmcalls import client as llm
from llmcalls import routing, services
from llmcalls.models import FeatureGrant, LLMCall, Provider
from tests.conftest import ServiceClient, logged_in
from tests.llmcalls.conftest import MESSAGES
from tests.llmcalls.fake_provider import FakeProvider

pytestmark = pytest.mark.django_db

Route = Callable[..., None]


def grants_of(name: str) -> dict[str, list[str]]:
    return {
        g.feature: sorted(g.action_types.values_list("key", flat=True))
        for g in FeatureGrant.objects.filter(service__name=name)
    }


# --- grants --------------------------------------------------------------------------------------


def test_create_service_grants_features(refund_type: ActionType) -> None:
    call_command(
        "create_service",
        "helpdesk",
        "--action-types=refund.issue",
        "--llm-features=support-refunds, support-replies",
        stdout=io.StringIO(),
    )
    assert grants_of("helpdesk") == {"support-refunds": [], "support-replies": []}
    assert AuditEvent.objects.filter(kind="llm_feature.granted").count() == 2


def test_create_service_with_a_bad_feature_creates_nothing(refund_type: ActionType) -> None:
    with pytest.raises(Exception, match="feature name"):
        call_command(
            "create_service", "helpdesk", "--llm-features=ok, \x07bell", stdout=io.StringIO()
        )
    assert not Service.objects.filter(name="helpdesk").exists()


def test_apply_grants_features_with_the_types_whose_reviewers_see_them(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    text = """
llm_grants:
  - {service: shop, feature: support-refunds, action_types: [refund.issue]}
  - {service: shop, feature: shop}
"""
    assert configfile.apply(text) == [
        "llm grant shop → support-refunds: created",
        "llm grant shop → shop: created",
    ]
    assert configfile.apply(text)[0].endswith("unchanged")
    assert grants_of("shop") == {"support-refunds": ["refund.issue"], "shop": []}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("{service: nobody, feature: x}", "unknown service 'nobody'"),
        ("{service: shop, feature: x, action_types: [email.send]}", "may not propose email.send"),
        ("{service: shop, feature: x, action_types: [no.such]}", "Unknown action types: no.such"),
        ("{service: shop, feature: ''}", "at least 1 character"),
    ],
)
def test_apply_refuses_a_grant_it_cannot_honour(
    shop: ServiceClient, email_type: ActionType, item: str, message: str
) -> None:
    with pytest.raises(ConfigFileError, match=message):
        configfile.apply(f"llm_grants:\n  - {item}\n")
    assert not FeatureGrant.objects.exists()


def test_the_admin_grants_a_feature_and_the_proxy_honours_it_at_once(
    shop: ServiceClient, fake: FakeProvider, make_route: Route, admin_client_logged_in: Client
) -> None:
    make_route("support-refunds", "primary/ok")
    headers = {"X-Gatehouse-Feature": "support-refunds"}
    url = "/llm/v1/chat/completions"
    assert shop.post_json(url, {"messages": MESSAGES}, **headers).status_code == 403

    response = admin_client_logged_in.post(
        "/admin/llmcalls/featuregrant/add/",
        {"service": shop.service.pk, "feature": "support-refunds"},
    )

    assert response.status_code == 302, response.content
    assert shop.post_json(url, {"messages": MESSAGES}, **headers).status_code == 200
    event = AuditEvent.objects.get(kind="llm_feature.granted")
    assert event.actor == "user:ada" and event.data["feature"] == "support-refunds"


def test_the_admin_refuses_a_grant_naming_a_type_the_service_may_not_propose(
    shop: ServiceClient, email_type: ActionType, admin_client_logged_in: Client
) -> None:
    response = admin_client_logged_in.post(
        "/admin/llmcalls/featuregrant/add/",
        {"service": shop.service.pk, "feature": "x", "action_types": [email_type.pk]},
    )
    assert response.status_code == 200 and "may not propose email.send" in response.content.decode()
    assert not FeatureGrant.objects.exists()


# --- provider keys -------------------------------------------------------------------------------


@pytest.fixture
def provider_staff(db: None) -> User:
    """Staff holding only the model-provider permissions."""
    user = User.objects.create_user("pat", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="llmcalls", codename__endswith="provider"
        )
    )
    return user


def provider_form(name: str, base_url: str, api_key_env: str) -> dict[str, str]:
    return {"name": name, "base_url": base_url, "api_key_env": api_key_env}


@pytest.mark.parametrize(
    "variable", ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "HOME"]
)
def test_the_admin_refuses_a_key_variable_outside_the_convention(
    provider_staff: User, variable: str
) -> None:
    response = logged_in(provider_staff).post(
        "/admin/llmcalls/provider/add/",
        provider_form("evil", "https://attacker.example/v1", variable),
    )
    assert response.status_code == 200
    assert "GATEHOUSE_PROVIDER_" in response.content.decode() or "own settings" in (
        response.content.decode()
    )
    assert not Provider.objects.exists()


@pytest.mark.parametrize("variable", ["SECRET_KEY", "DATABASE_URL", "PRIMARY_KEY"])
def test_apply_refuses_a_key_variable_outside_the_convention(variable: str) -> None:
    with pytest.raises(ConfigFileError, match="api_key_env"):
        configfile.apply(
            "llm_providers:\n"
            f"  - {{name: p, base_url: 'https://x.example/v1', api_key_env: {variable}}}\n"
        )
    assert not Provider.objects.exists()


def test_the_allow_list_admits_a_name_but_never_gatehouses_own_secrets(settings: Any) -> None:
    settings.LLM_PROVIDER_KEY_ENVS = ["OPENAI_API_KEY", "SECRET_KEY", "DATABASE_URL"]
    assert services.api_key_env_problem("OPENAI_API_KEY") == ""
    assert services.api_key_env_problem("GATEHOUSE_PROVIDER_OPENAI") == ""
    assert "own settings" in services.api_key_env_problem("SECRET_KEY")
    assert "own settings" in services.api_key_env_problem("DATABASE_URL")
    assert services.api_key_env_problem("GATEHOUSE_PROVIDER_") != ""


def test_a_call_never_sends_a_refused_variable_even_if_the_row_has_it(
    fake: FakeProvider, make_route: Route, monkeypatch: Any
) -> None:
    make_route("support", "primary/ok")
    monkeypatch.setenv("SECRET_KEY", "the-real-secret-key")
    Provider.objects.filter(name="primary").update(api_key_env="SECRET_KEY")  # around the checks
    routing.forget()

    with pytest.raises(llm.AllModelsFailed):
        llm.complete(feature="support", messages=MESSAGES)

    assert not fake.requests
    call = LLMCall.objects.get()
    assert "own settings" in call.attempt_log[0]["detail"]


def test_changing_a_providers_base_url_or_key_variable_is_audited(
    provider_staff: User, monkeypatch: Any
) -> None:
    client = logged_in(provider_staff)
    client.post(
        "/admin/llmcalls/provider/add/",
        provider_form("primary", "https://api.example.com/v1", "GATEHOUSE_PROVIDER_PRIMARY"),
    )
    provider = Provider.objects.get()

    response = client.post(
        f"/admin/llmcalls/provider/{provider.pk}/change/",
        provider_form("primary", "https://elsewhere.example/v1", "GATEHOUSE_PROVIDER_OTHER"),
    )

    assert response.status_code == 302
    created, changed = AuditEvent.objects.filter(kind__startswith="llm_provider.").order_by("id")
    assert created.kind == "llm_provider.created" and created.actor == "user:pat"
    assert changed.kind == "llm_provider.changed" and changed.actor == "user:pat"
    assert changed.data == {
        "provider": "primary",
        "base_url": {"old": "https://api.example.com/v1", "new": "https://elsewhere.example/v1"},
        "api_key_env": {"old": "GATEHOUSE_PROVIDER_PRIMARY", "new": "GATEHOUSE_PROVIDER_OTHER"},
    }


def test_apply_audits_a_provider_change_and_leaves_an_unchanged_one_alone() -> None:
    first = "llm_providers:\n  - {name: p, base_url: 'https://a.example/v1'}\n"
    configfile.apply(first)
    configfile.apply(first)
    configfile.apply(first.replace("a.example", "b.example"))

    kinds = list(
        AuditEvent.objects.filter(kind__startswith="llm_provider.").values_list("kind", "actor")
    )
    assert kinds == [
        ("llm_provider.created", "config:apply"),
        ("llm_provider.changed", "config:apply"),
    ]
