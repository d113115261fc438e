"""Every admin page an administrator can reach renders."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse


@pytest.mark.parametrize(
    "model", list(admin.site._registry), ids=lambda m: f"{m._meta.app_label}.{m._meta.model_name}"
)
def test_the_changelist_and_add_page_render(db: None, model: type) -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw-root-123456"))
    opts = model._meta  # type: ignore[attr-defined]
    changelist = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert changelist.status_code == 200
    add = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
    assert add.status_code in (200, 403)  # 403: records only the system writes


def test_a_view_only_user_cannot_run_the_admins_actions(db: None) -> None:
    """Admin actions change things: viewing a list is no permission to run them."""
    from django.contrib.auth.models import Permission
    from django.utils import timezone

    from approvals import services
    from approvals.models import ApiKey, WebhookEndpoint

    service, plain = services.service_create(name="shop")
    endpoint = WebhookEndpoint.objects.create(
        url="https://x.example/hook", disabled_at=timezone.now()
    )
    viewer = User.objects.create_user("vic", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_service", "view_apikey", "view_webhookendpoint"]
        )
    )
    client = Client()
    client.force_login(viewer)

    client.post(
        "/admin/approvals/service/", {"action": "issue_key", "_selected_action": [service.pk]}
    )
    client.post(
        "/admin/approvals/apikey/",
        {"action": "revoke", "_selected_action": [ApiKey.objects.get().pk]},
    )
    client.post(
        "/admin/approvals/webhookendpoint/",
        {"action": "enable", "_selected_action": [endpoint.pk]},
    )

    assert ApiKey.objects.count() == 1 and not ApiKey.objects.get().is_revoked
    assert services.api_key_authenticate(token=plain) is not None
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk, disabled_at__isnull=False).exists()
