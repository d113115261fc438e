"""foundation.permissions.PermissionBackend answers has_perm as Django's ModelBackend does, from
one statement."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, Group, Permission, User
from django.test import Client, override_settings
from django.urls import reverse

from foundation.permissions import PermissionBackend

pytestmark = pytest.mark.django_db
OURS = "foundation.permissions.PermissionBackend"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"

ASKED = [
    "evals.view_evalset",
    "evals.add_evalset",
    "insights.acknowledge_alert",
    "approvals.add_rule",
    "llmcalls.view_llmcall",
    "nosuchapp.view_nothing",
]


def _perm(name: str) -> Permission:
    app_label, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def _personas() -> dict[str, User]:
    viewers = Group.objects.create(name="eval viewers")
    viewers.permissions.add(_perm("evals.view_evalset"), _perm("insights.acknowledge_alert"))
    editors = Group.objects.create(name="rule editors")
    editors.permissions.add(_perm("approvals.add_rule"), _perm("evals.view_evalset"))
    direct = User.objects.create_user("direct")
    direct.user_permissions.add(_perm("evals.add_evalset"))
    grouped = User.objects.create_user("grouped")
    grouped.groups.add(viewers, editors)
    both = User.objects.create_user("both")
    both.user_permissions.add(_perm("llmcalls.view_llmcall"), _perm("evals.view_evalset"))
    both.groups.add(viewers)
    inactive = User.objects.create_user("inactive", is_active=False)
    inactive.user_permissions.add(_perm("evals.view_evalset"))
    inactive.groups.add(editors)
    User.objects.create_user("nobody")
    User.objects.create_superuser("root")
    inactive_root = User.objects.create_superuser("inactive root", is_active=False)
    inactive_root.groups.add(viewers)
    return {u.username: u for u in User.objects.all()}


def test_it_answers_every_persona_as_the_model_backend_does() -> None:
    personas = _personas()
    assert len(personas) == 7
    apps = ("evals", "insights", "approvals", "llmcalls", "nosuchapp")
    answers = {}
    assert OURS in settings.AUTHENTICATION_BACKENDS
    for label, backends in (
        (OURS, settings.AUTHENTICATION_BACKENDS),
        (MODEL_BACKEND, [MODEL_BACKEND]),
    ):
        with override_settings(AUTHENTICATION_BACKENDS=backends):
            for name in personas:
                user = User.objects.get(username=name)  # a fresh object: nothing cached
                answers[label, name] = (
                    [user.has_perm(perm) for perm in ASKED],
                    [user.has_module_perms(app_label) for app_label in apps],
                    user.get_all_permissions(),
                )
    for name in personas:
        assert answers[OURS, name] == answers[MODEL_BACKEND, name], name
    grouped = User.objects.get(username="grouped")
    assert PermissionBackend().get_all_permissions(grouped) == {
        "evals.view_evalset",
        "insights.acknowledge_alert",
        "approvals.add_rule",
    }
    assert User.objects.get(username="both").has_perm("evals.view_evalset")
    assert not User.objects.get(username="nobody").has_perm("evals.view_evalset")
    assert not User.objects.get(username="inactive").has_perm("evals.view_evalset")
    assert User.objects.get(username="root").has_perm("evals.view_evalset")
    assert not AnonymousUser().has_perm("evals.view_evalset")


def test_a_refusal_is_final_and_read_once(django_assert_num_queries: object) -> None:
    _personas()
    user = User.objects.get(username="grouped")
    with django_assert_num_queries(1):  # type: ignore[operator]
        assert user.has_perm("evals.view_evalset")
        assert not user.has_perm("evals.add_evalset")  # ModelBackend not asked: no statement
        assert user.has_module_perms("insights")


def test_the_sections_menu_shows_evals_only_to_who_may_see_them(reviewer: User) -> None:
    client = Client()
    client.force_login(reviewer)
    assert 'href="/evals/"' not in client.get(reverse("approvals:queue")).content.decode()
    group = Group.objects.create(name="eval viewers")
    group.permissions.add(_perm("evals.view_evalset"))
    reviewer.groups.add(group)
    assert 'href="/evals/"' in client.get(reverse("approvals:queue")).content.decode()
