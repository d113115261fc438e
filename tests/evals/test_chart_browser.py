"""The prompt page in a real browser under a strict Content-Security-Policy: the chart is drawn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from evals import services
from evals.models import EvalResult, EvalRun, EvalSet
from tests.live_app import any_free_port, read_chart, serve

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def live_app() -> Iterator[str]:
    yield from serve(any_free_port())


def test_the_accuracy_chart_draws_under_script_src_self(
    live_app: str, refund_set: EvalSet, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    cases = list(refund_set.cases.filter(split="dev"))
    for number, wrong in ((1, 12), (2, 6), (2, 4)):
        run = EvalRun.objects.create(
            eval_set=refund_set,
            prompt_version=services.prompt_resolve(ref=f"refunds@{number}"),
            route="evals-large",
            scorer="label",
        )
        EvalResult.objects.bulk_create(
            EvalResult(run=run, case=c, passed=i >= wrong) for i, c in enumerate(cases)
        )
        services.run_finish(run=run)
    sam = User.objects.create_user("sam", is_staff=True)
    sam.user_permissions.add(Permission.objects.get(codename="view_evalset"))
    session = Client()
    session.force_login(sam)
    cookie = session.cookies[settings.SESSION_COOKIE_NAME].value

    series, drawn, violations = read_chart(
        base_url=live_app,
        cookie=(settings.SESSION_COOKIE_NAME, cookie),
        path="/evals/prompts/refunds/",
        chart_id="ev-accuracy-chart",
        read="c.data.datasets.map(d => [d.label, d.data.map(p => p.y)])",
    )

    assert series == [
        ["refunds dev · v1 on evals-large", [75.0]],
        ["refunds dev · v2 on evals-large", [87.5, 91.67]],
    ]
    assert drawn > 5000  # a blank canvas encodes to a few hundred bytes
    assert violations == []
