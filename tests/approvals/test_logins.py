"""Sign-in throttling on /login/ and /admin/login/, and password rules on every path that sets
one (issue 12): 30 wrong passwords followed by the right one used to sign in."""

from __future__ import annotations

import io
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from approvals import services
from approvals.management.commands.seed_demo import DEMO_PASSWORD
from approvals.models import ActionType
from foundation.errors import ApplicationError
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db
PASSWORD = "pw-rita-123456"
LOGIN_PAGES = ["/login/", "/admin/login/"]


def _sign_in(client: Client, page: str, username: str, password: str, **extra: Any) -> Any:
    return client.post(page, {"username": username, "password": password}, **extra)


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# Each failed sign-in costs a password hash (~0.5 s here): the tests use a limit of 3, the
# default is LOGIN_FAILURE_LIMIT=10.
@pytest.mark.parametrize("page", LOGIN_PAGES)
@override_settings(AXES_FAILURE_LIMIT=3)
def test_wrong_passwords_lock_the_account_out_even_for_the_right_password(
    reviewer: User, page: str
) -> None:
    reviewer.is_staff = True
    reviewer.save()
    client = Client()
    for _ in range(2):
        assert _sign_in(client, page, "rita", "wrong-guess").status_code == 200
    assert _sign_in(client, page, "rita", "wrong-guess").status_code == 429  # the third
    response = _sign_in(client, page, "rita", PASSWORD)
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    assert "ask an admin to unlock" in response.content.decode()
    assert not _signed_in(client)


@override_settings(AXES_FAILURE_LIMIT=3)
def test_one_address_trying_many_accounts_is_locked_out(reviewer: User) -> None:
    client = Client()
    for i in range(3):
        _sign_in(client, "/login/", f"guess-{i}", "password")
    assert _sign_in(client, "/login/", "rita", PASSWORD).status_code == 429
    # another address may still sign in as rita: her account itself had no failure
    other = Client(REMOTE_ADDR="203.0.113.9")
    assert _sign_in(other, "/login/", "rita", PASSWORD).status_code == 302


@override_settings(AXES_FAILURE_LIMIT=3)
def test_one_account_tried_from_many_addresses_is_locked_out(reviewer: User) -> None:
    for i in range(3):
        _sign_in(Client(REMOTE_ADDR=f"203.0.113.{i + 1}"), "/login/", "rita", "wrong-guess")
    fresh = Client(REMOTE_ADDR="198.51.100.7")
    assert _sign_in(fresh, "/login/", "rita", PASSWORD).status_code == 429


@override_settings(AXES_FAILURE_LIMIT=3)
def test_an_admin_unlocks_an_account(reviewer: User) -> None:
    client = Client()
    for _ in range(3):
        _sign_in(client, "/login/", "rita", "wrong-guess")
    admin = logged_in(User.objects.create_superuser("root", password="pw-root-123456"))
    attempts = AccessAttempt.objects.filter(username="rita")
    assert admin.get("/admin/axes/accessattempt/").status_code == 200
    admin.post(
        "/admin/axes/accessattempt/",
        {
            "action": "delete_selected",
            "_selected_action": list(attempts.values_list("pk", flat=True)),
            "post": "yes",
        },
    )
    assert not AccessAttempt.objects.filter(username="rita").exists()
    assert _sign_in(client, "/login/", "rita", PASSWORD).status_code == 302


@override_settings(AXES_FAILURE_LIMIT=3)
def test_a_successful_sign_in_starts_the_count_again(reviewer: User) -> None:
    client = Client()
    for _ in range(2):
        _sign_in(client, "/login/", "rita", "typo")
    assert _sign_in(client, "/login/", "rita", PASSWORD).status_code == 302
    client.post("/logout/")
    for _ in range(2):
        _sign_in(client, "/login/", "rita", "typo")
    assert _sign_in(client, "/login/", "rita", PASSWORD).status_code == 302


@override_settings(
    AXES_FAILURE_LIMIT=3, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")
)
def test_behind_the_proxy_a_forged_forwarded_address_does_not_escape_the_count(
    reviewer: User,
) -> None:
    for i in range(3):
        forged = {"HTTP_X_FORWARDED_FOR": f"10.9.9.{i}, 198.51.100.20"}
        _sign_in(Client(), "/login/", f"guess-{i}", "x", **forged)
    blocked = {"HTTP_X_FORWARDED_FOR": "10.1.1.1, 198.51.100.20"}
    assert _sign_in(Client(), "/login/", "rita", PASSWORD, **blocked).status_code == 429


# --- passwords ------------------------------------------------------------------------------


@pytest.fixture
def refunds(refund_type: ActionType) -> ActionType:
    return refund_type


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("password", "too common"),
        ("12345678", "entirely numeric"),
        ("nina-smith", "too similar"),
        ("short", "too short"),
    ],
)
def test_create_reviewer_runs_the_password_validators(
    refunds: ActionType, monkeypatch: pytest.MonkeyPatch, password: str, why: str
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    with pytest.raises(CommandError, match=why):
        call_command(
            "create_reviewer",
            "nina-smith",
            "--action-types",
            "refund.issue",
            "--password-stdin",
            stdout=io.StringIO(),
        )
    assert not User.objects.filter(username="nina-smith").exists()


def test_the_reviewer_service_refuses_a_weak_password_naming_the_field(refunds: ActionType) -> None:
    with pytest.raises(ApplicationError) as refused:
        services.reviewer_create(
            username="nina", action_type_keys=["refund.issue"], password="12345678"
        )
    assert refused.value.errors[0]["loc"] == ["password"]


@pytest.mark.parametrize("username", ["reviewer", "comms", "reviewer2", "admin"])
def test_the_demo_password_passes_the_validators(username: str) -> None:
    services.password_check(password=DEMO_PASSWORD, user=User(username=username))


@pytest.mark.parametrize("page", LOGIN_PAGES)
@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example"])
def test_signing_in_never_redirects_off_the_site(reviewer: User, page: str, target: str) -> None:
    reviewer.is_staff = True
    reviewer.save()
    response = Client().post(page, {"username": "rita", "password": PASSWORD, "next": target})
    assert response.status_code == 302
    assert "evil.example" not in response["Location"]
