from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from approvals.models import ActionType
from llmcalls import client as llm
from llmcalls.models import LLMCall
from tests.llmcalls.conftest import MESSAGES
from tests.llmcalls.fake_provider import FakeProvider

pytestmark = pytest.mark.django_db

Route = Callable[..., None]


@pytest.fixture
def calls(fake: FakeProvider, make_route: Route, prices: None) -> list[LLMCall]:
    make_route("support", "primary/ok", cache_ttl=60)
    make_route("triage", "primary/500", "backup/unpriced")
    fake.answer = "<script>alert('owned')</script> Refund approved."
    llm.complete(feature="support", messages=MESSAGES)
    llm.complete(feature="support", messages=MESSAGES)  # a cache hit
    llm.complete(feature="triage", messages=[{"role": "user", "content": "<b>bold</b>"}])
    return list(LLMCall.objects.all())


@pytest.fixture
def reviewer_client(refund_type: ActionType) -> Client:
    """Allowed to read every call (the fixture's calls are Gatehouse's own, of no service)."""
    auditor = User.objects.create_user("audrey")
    auditor.user_permissions.add(Permission.objects.get(codename="view_llmcall"))
    c = Client()
    c.force_login(auditor)
    return c


def test_the_dashboard_shows_costs_rates_and_the_unpriced_warning(
    reviewer_client: Client, calls: list[LLMCall]
) -> None:
    response = reviewer_client.get("/llm/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="llm-cost-data"' in html and "/static/llmcalls/dashboard." in html
    assert "<script>alert" not in html
    assert "Cost unknown for some calls" in html and "backup/unpriced" in html
    assert "primary/ok" in html
    chart = response.context["chart"]
    assert chart["series"][0]["feature"] == "support"
    assert chart["series"][0]["costs"][-1] == pytest.approx(0.026)
    rates = response.context["rates"]
    assert (rates["calls"], rates["cache_hits"], rates["fallbacks"]) == (3, 1, 1)
    stats = {(m.provider, m.model): m for m in response.context["models"]}
    assert stats[("primary", "ok")].calls == 1 and stats[("primary", "ok")].error_pct == 0
    assert stats[("backup", "unpriced")].p50_ms is not None
    expensive = response.context["expensive"]
    assert expensive[0].cost_usd == Decimal("0.026")


def test_the_page_has_no_inline_script(reviewer_client: Client, calls: list[LLMCall]) -> None:
    html = reviewer_client.get("/llm/").content.decode()
    for tag in html.split("<script")[1:]:
        head = tag.split(">", 1)[0]
        assert "src=" in head or 'type="application/json"' in head, head


def test_a_call_page_shows_prompt_response_and_attempts_escaped(
    reviewer_client: Client, calls: list[LLMCall]
) -> None:
    triage = LLMCall.objects.get(feature="triage")

    response = reviewer_client.get(f"/llm/calls/{triage.id}/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert" in html
    assert "primary/500" in html and "HTTP 500" in html
    assert "unknown — no price for this model" in html


def test_an_unknown_call_is_404(reviewer_client: Client, fake: FakeProvider) -> None:
    assert (
        reviewer_client.get("/llm/calls/5f0c1d5e-0000-4000-8000-000000000000/").status_code == 404
    )


def test_an_outsider_is_refused_and_a_visitor_sent_to_log_in(
    calls: list[LLMCall], client: Client
) -> None:
    assert client.get("/llm/").status_code == 302
    outsider = User.objects.create_user("olga", password="pw-olga-123456")
    client.force_login(outsider)
    assert client.get("/llm/").status_code == 403
    assert client.get(f"/llm/calls/{calls[0].id}/").status_code == 403


def test_staff_without_the_permission_may_not_read(calls: list[LLMCall], client: Client) -> None:
    client.force_login(User.objects.create_user("sam", is_staff=True))
    assert client.get("/llm/").status_code == 403
    assert client.get(f"/llm/calls/{calls[0].id}/").status_code == 403


def test_post_is_405(reviewer_client: Client, fake: FakeProvider) -> None:
    assert reviewer_client.post("/llm/").status_code == 405


def test_the_summary_fragment_renders_a_linked_call_or_says_it_is_missing(
    calls: list[LLMCall],
) -> None:
    from django.template.loader import render_to_string

    from llmcalls.selectors import call_by_id

    call = LLMCall.objects.filter(feature="support").earliest("created_at")
    html = render_to_string(
        "llmcalls/_call_summary.html", {"call": call_by_id(call_id=call.id, service="")}
    )
    assert f"/llm/calls/{call.id}/" in html and "Is order 42 eligible" in html
    assert "ms" in html and "$0.026" in html
    missing = render_to_string(
        "llmcalls/_call_summary.html", {"call": call_by_id(call_id="junk", service="")}
    )
    assert "not in the log" in missing


def test_model_stats_in_postgresql_are_pythons_over_the_same_sample() -> None:
    """The dashboard's percentiles, taken by PostgreSQL, are the nearest-rank ones Python takes
    (`model_stats_of`) of the same rows: the sample's filters and the reader's queryset hold."""
    from datetime import timedelta

    from django.utils import timezone

    from llmcalls import selectors

    now = timezone.now()
    rows = []
    for i in range(97):
        rows.append(
            LLMCall(
                created_at=now - timedelta(minutes=i),
                feature="support" if i % 4 else "triage",
                provider="primary" if i % 3 else "backup",
                model=["m-a", "m-b", "M-c", ""][i % 4] if i % 11 else "m-a",
                status=["ok", "ok", "error", "refused", "ok"][i % 5],
                cache_hit=i % 13 == 0,
                latency_ms=None if i % 7 == 0 else float((i * 37) % 101) + 0.25,
            )
        )
    rows.append(  # outside the window
        LLMCall(
            created_at=now - timedelta(days=9),
            feature="support",
            provider="primary",
            model="m-a",
            status="ok",
            latency_ms=9999.0,
        )
    )
    LLMCall.objects.bulk_create(rows)
    since = now - timedelta(days=7)
    for calls in (None, LLMCall.objects.filter(feature="support")):
        sample = (
            (calls if calls is not None else LLMCall.objects.all())
            .filter(created_at__gte=since, cache_hit=False)
            .exclude(status="refused")
            .exclude(model="")
            .values_list("provider", "model", "status", "latency_ms")
        )
        expected = selectors.model_stats_of(list(sample))
        stats = selectors.model_stats(since=since, calls=calls)
        assert stats == expected
        assert len(stats) >= 4 and all(s.p95_ms != 9999.0 for s in stats)
    only_support = selectors.model_stats(
        since=since, calls=LLMCall.objects.filter(feature="support")
    )
    assert sum(s.calls for s in only_support) < sum(
        s.calls for s in selectors.model_stats(since=since)
    )
