"""Admin edits of services and action types go through the service layer and are audited."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from approvals import services
from approvals.models import ActionType, ApiKey, AuditEvent, Service
from tests.conftest import logged_in

NO_INLINE_KEYS = {
    "api_keys-TOTAL_FORMS": "0",
    "api_keys-INITIAL_FORMS": "0",
    "api_keys-MIN_NUM_FORMS": "0",
    "api_keys-MAX_NUM_FORMS": "1000",
}
ACTION_TYPE_FORM = {
    "key": "refund.issue",
    "title": "Issue a refund",
    "description": "",
    "payload_schema": '{"type": "object"}',
    "risk": "medium",
    "approvals_required": "1",
    "review_ttl": "1 00:00:00",
    "executor_kind": "none",
    "executor_target": "",
    "redacted_fields": "[]",
}


@pytest.fixture
def superuser(db: None) -> Client:
    return logged_in(User.objects.create_superuser("root", password="pw-root-123456"))


def test_creating_a_service_in_the_admin_makes_its_secret_and_first_key_and_audits_it(
    superuser: Client, refund_type: ActionType
) -> None:
    response = superuser.post(
        "/admin/approvals/service/add/",
        {"name": "shop", "is_active": "on", "action_types": [refund_type.pk]} | NO_INLINE_KEYS,
        follow=True,
    )
    assert response.status_code == 200
    service = Service.objects.get()
    assert service.webhook_secret.startswith("whsec_")
    assert list(service.action_types.all()) == [refund_type]
    [key] = ApiKey.objects.filter(service=service)
    [token] = re.findall(rf"gh_{key.prefix}_[A-Za-z0-9]+", response.content.decode())
    assert services.api_key_authenticate(token=token) == service
    [event] = AuditEvent.objects.filter(kind="service.created")
    assert event.actor == "user:root" and event.data == {"service": "shop"}


def test_editing_a_service_in_the_admin_is_audited_with_what_changed(
    superuser: Client, refund_type: ActionType
) -> None:
    service, _ = services.service_create(name="shop")
    response = superuser.post(
        f"/admin/approvals/service/{service.pk}/change/",
        {"name": "shop", "action_types": [refund_type.pk], "callback_url": ""} | NO_INLINE_KEYS,
    )
    assert response.status_code == 302
    service.refresh_from_db()
    assert not service.is_active and list(service.action_types.all()) == [refund_type]
    [event] = AuditEvent.objects.filter(kind="service.updated")
    assert event.actor == "user:root"
    assert event.data == {"service": "shop", "changed": ["action_types", "is_active"]}


def test_action_types_are_created_and_changed_through_the_service_and_audited(
    superuser: Client,
) -> None:
    response = superuser.post("/admin/approvals/actiontype/add/", ACTION_TYPE_FORM)
    assert response.status_code == 302, response.content.decode()[:2000]
    action_type = ActionType.objects.get()
    [created] = AuditEvent.objects.filter(kind="action_type.created")
    assert created.actor == "user:root" and created.data["action_type"] == "refund.issue"
    response = superuser.post(
        f"/admin/approvals/actiontype/{action_type.pk}/change/",
        ACTION_TYPE_FORM | {"risk": "high", "irreversible": "on"},
    )
    assert response.status_code == 302
    action_type.refresh_from_db()
    assert action_type.risk == "high" and action_type.irreversible
    [updated] = AuditEvent.objects.filter(kind="action_type.updated")
    assert updated.data["action_type"] == "refund.issue"
    assert {"irreversible", "risk"} <= set(updated.data["changed"])
    assert not {"key", "title", "approvals_required"} & set(updated.data["changed"])


def test_the_service_layer_audits_action_types_saved_outside_the_admin(db: None) -> None:
    action_type = ActionType(key="email.send", title="Send an email")
    assert services.action_type_save(action_type=action_type, changed=[], actor="system")
    assert not services.action_type_save(action_type=action_type, changed=["title"], actor="x")
    kinds = list(AuditEvent.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == ["action_type.created", "action_type.updated"]
