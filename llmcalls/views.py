from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from llmcalls import selectors
from llmcalls.models import LLMCall

WINDOW_DAYS = 7


def _require_reader(request: HttpRequest) -> QuerySet[LLMCall]:
    """The calls this user may read: all with llmcalls.view_llmcall, else their teams' lines."""
    if not selectors.can_read_calls(user=request.user):
        raise PermissionDenied(
            "Model calls are visible to reviewers (their teams' calls) and to users allowed "
            "to view model calls."
        )
    return selectors.visible_calls(user=request.user)


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    calls = _require_reader(request)
    since = timezone.now() - timedelta(days=WINDOW_DAYS)
    context = {
        "window_days": WINDOW_DAYS,
        "chart": selectors.cost_per_feature_per_day(days=14, calls=calls),
        "models": selectors.model_stats(since=since, calls=calls),
        "rates": selectors.rates(since=since, calls=calls),
        "unpriced": selectors.unpriced_models(since=since, calls=calls),
        "slowest": selectors.slowest_calls(since=since, calls=calls),
        "expensive": selectors.most_expensive_calls(since=since, calls=calls),
        "budgets": selectors.budgets_today(calls=calls),
    }
    return render(request, "llmcalls/dashboard.html", context)


@login_required
@require_GET
def call_detail(request: HttpRequest, call_id: uuid.UUID) -> HttpResponse:
    # Another team's call is not found, rather than forbidden: its existence is not theirs.
    call = get_object_or_404(_require_reader(request), id=call_id)
    return render(request, "llmcalls/call.html", {"call": call})
