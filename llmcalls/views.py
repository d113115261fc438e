from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from llmcalls import selectors
from llmcalls.models import LLMCall

WINDOW_DAYS = 7


def _require_reader(request: HttpRequest) -> None:
    """Staff, and reviewers (members of a group that reviews some action type)."""
    user = request.user
    if user.is_staff or user.groups.filter(action_types__isnull=False).exists():  # type: ignore[union-attr]
        return
    raise PermissionDenied("Model calls are visible to staff and reviewers.")


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    _require_reader(request)
    since = timezone.now() - timedelta(days=WINDOW_DAYS)
    context = {
        "window_days": WINDOW_DAYS,
        "chart": selectors.cost_per_feature_per_day(days=14),
        "models": selectors.model_stats(since=since),
        "rates": selectors.rates(since=since),
        "unpriced": selectors.unpriced_models(since=since),
        "slowest": selectors.slowest_calls(since=since),
        "expensive": selectors.most_expensive_calls(since=since),
        "budgets": selectors.budgets_today(),
    }
    return render(request, "llmcalls/dashboard.html", context)


@login_required
@require_GET
def call_detail(request: HttpRequest, call_id: uuid.UUID) -> HttpResponse:
    _require_reader(request)
    call = get_object_or_404(LLMCall, id=call_id)
    return render(request, "llmcalls/call.html", {"call": call})
