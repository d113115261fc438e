"""The /llm/ page in a real browser under a strict Content-Security-Policy: the chart is drawn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from llmcalls import client as llm
from tests.live_app import read_chart
from tests.llmcalls.conftest import MESSAGES
from tests.llmcalls.fake_provider import FakeProvider

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_cost_chart_draws_under_script_src_self(
    live_app: str,
    fake: FakeProvider,
    make_route: Callable[..., None],
    prices: None,
    settings: Any,
) -> None:
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    make_route("support", "primary/ok")
    make_route("triage", "primary/small")
    llm.complete(feature="support", messages=MESSAGES)
    llm.complete(feature="triage", messages=MESSAGES)
    staff = User.objects.create_user("sam", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_llmcall"))
    session = Client()
    session.force_login(staff)
    cookie = session.cookies[settings.SESSION_COOKIE_NAME].value

    datasets, drawn, violations = read_chart(
        base_url=live_app,
        cookie=(settings.SESSION_COOKIE_NAME, cookie),
        path="/llm/",
        chart_id="llm-cost-chart",
        read="c.data.datasets.map(d => d.label)",
    )

    assert datasets == ["support", "triage"]
    assert drawn > 5000  # a blank canvas encodes to a few hundred bytes
    assert violations == []
