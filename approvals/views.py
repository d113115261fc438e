"""The reviewer's workspace: thin views over approvals.selectors and approvals.services."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from approvals import events, selectors, services
from approvals.forms import CommentForm, DecisionForm
from approvals.models import Proposal, Risk
from foundation.errors import ApplicationError, NotFound


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


ROW_TARGETS = {"queue-rows", "queue-more", "history-rows", "history-more"}


def _reviewer(request: HtmxHttpRequest) -> User:
    assert isinstance(request.user, User)  # login_required ran first
    return request.user


def _proposal_or_404(request: HtmxHttpRequest, proposal_id: uuid.UUID) -> Proposal:
    try:
        return selectors.proposal_for_reviewer(user=request.user, proposal_id=proposal_id)
    except NotFound:
        raise Http404("No such proposal.") from None


def _wants_rows(request: HtmxHttpRequest) -> bool:
    return bool(request.htmx) and request.htmx.target in ROW_TARGETS


def _listing(
    request: HtmxHttpRequest, name: str, filters: Any, page: Any, **context: Any
) -> HttpResponse:
    """A paged list page (`approvals/NAME.html`), or only its rows for an htmx filter or page."""
    next_url = "?" + urlencode(filters.as_query(after=page.next_cursor)) if page.next_cursor else ""
    template = f"approvals/_{name}_rows.html" if _wants_rows(request) else f"approvals/{name}.html"
    return render(
        request, template, {"page": page, "filters": filters, "next_url": next_url, **context}
    )


@login_required
@require_GET
def queue(request: HtmxHttpRequest) -> HttpResponse:
    filters = selectors.QueueFilters.from_query(request.GET)
    page = selectors.queue_for_reviewer(
        user=request.user, filters=filters, limit=settings.REVIEW_QUEUE_PAGE_SIZE
    )
    return _listing(
        request, "queue", filters, page, risks=Risk.choices, ages=list(selectors.AGE_CHOICES)
    )


@login_required
@require_GET
def history(request: HtmxHttpRequest) -> HttpResponse:
    filters = selectors.HistoryFilters.from_query(request.GET)
    page = selectors.history_for_reviewer(
        user=request.user, filters=filters, limit=settings.REVIEW_QUEUE_PAGE_SIZE
    )
    return _listing(
        request,
        "history",
        filters,
        page,
        states=selectors.DECIDED_STATES,
        decided_by=Proposal.DecidedBy.values,
    )


def _render_proposal(
    request: HtmxHttpRequest,
    proposal: Proposal,
    *,
    status: int = 200,
    error: str = "",
    form: DecisionForm | None = None,
) -> HttpResponse:
    reviewer = _reviewer(request)
    reviewed = any(r.reviewer_id == reviewer.pk for r in proposal.reviews.all())
    raised = bool(proposal.raised_by) and proposal.raised_by in selectors.reviewer_identities(
        user=reviewer
    )
    context: dict[str, Any] = {
        "p": proposal,
        "history": selectors.proposal_history(proposal=proposal),
        "model_call": selectors.linked_model_call(proposal=proposal),
        "you_reviewed": reviewed,
        "raised_by_you": raised,
        "may_decide": proposal.state == Proposal.State.PENDING_REVIEW
        and not reviewed
        and not raised,
        "error": error,
        "form": form,
        "edited_text": (form.data.get("edited_payload") if form is not None else "") or "",
    }
    return render(request, "approvals/proposal.html", context, status=status)


@login_required
@require_GET
def proposal_detail(request: HtmxHttpRequest, proposal_id: uuid.UUID) -> HttpResponse:
    return _render_proposal(request, _proposal_or_404(request, proposal_id))


@login_required
@require_POST
def proposal_claim(request: HtmxHttpRequest, proposal_id: uuid.UUID) -> HttpResponse:
    """Claim or renew (htmx, on load and periodically from the open page)."""
    proposal = _proposal_or_404(request, proposal_id)
    context: dict[str, Any] = {"p": proposal}
    status = 200
    try:
        result = services.claim_acquire(proposal_id=proposal.pk, reviewer=_reviewer(request))
        context.update(claim=result.claim, acquired=result.acquired)
    except NotFound:
        raise Http404("No such proposal.") from None
    except ApplicationError as exc:
        context["error"] = exc.message
        status = exc.status
    if not request.htmx:
        if "error" in context:
            messages.error(request, context["error"])
        return redirect("approvals:proposal", proposal_id=proposal.pk)
    # htmx swaps only 2xx responses by default; the panel carries the refusal as text.
    return render(request, "approvals/_claim.html", context, status=200 if request.htmx else status)


@login_required
@require_POST
def proposal_release(request: HtmxHttpRequest, proposal_id: uuid.UUID) -> HttpResponse:
    proposal = _proposal_or_404(request, proposal_id)
    services.claim_release(proposal_id=proposal.pk, reviewer=_reviewer(request))
    messages.info(request, "Released; others can take it now.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("approvals:queue"))
    return redirect("approvals:queue")


@login_required
@require_POST
def proposal_decide(request: HtmxHttpRequest, proposal_id: uuid.UUID) -> HttpResponse:
    proposal = _proposal_or_404(request, proposal_id)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        first = next(iter(form.errors.values()))[0]
        return _render_proposal(request, proposal, status=422, error=str(first), form=form)
    data = form.cleaned_data
    try:
        decided = services.proposal_decide(
            proposal=proposal,
            reviewer=_reviewer(request),
            verdict=data["verdict"],
            comment=data["comment"],
            seen_payload_hash=data["payload_hash"],
            edited_payload=data["edited_payload"],
        )
    except NotFound:
        raise Http404("No such proposal.") from None
    except ApplicationError as exc:
        proposal = _proposal_or_404(request, proposal_id)
        return _render_proposal(request, proposal, status=exc.status, error=exc.message, form=form)
    if decided.state == Proposal.State.PENDING_REVIEW:
        messages.success(request, "Approval recorded; a second reviewer must approve it too.")
    else:
        messages.success(request, f"{decided.get_state_display()}: {decided.summary}")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("approvals:queue"))
    return redirect("approvals:queue")


@require_POST
def logout(request: HtmxHttpRequest) -> HttpResponse:
    """Log out and close this reviewer's live sockets in every open tab."""
    user_id = request.user.pk
    auth.logout(request)
    if user_id is not None:
        events.reviewer_logged_out(user_id)
    return redirect("approvals:login")


@login_required
@require_POST
def proposal_comment(request: HtmxHttpRequest, proposal_id: uuid.UUID) -> HttpResponse:
    proposal = _proposal_or_404(request, proposal_id)
    form = CommentForm(request.POST)
    if not form.is_valid():
        return _render_proposal(request, proposal, status=422, error="A comment cannot be empty.")
    try:
        services.proposal_comment(
            proposal_id=proposal.pk, reviewer=_reviewer(request), text=form.cleaned_data["comment"]
        )
    except ApplicationError as exc:
        return _render_proposal(request, proposal, status=exc.status, error=exc.message)
    messages.success(request, "Comment added.")
    return redirect("approvals:proposal", proposal_id=proposal.pk)


@login_required
@require_POST
def proposal_extend(request: HtmxHttpRequest, proposal_id: uuid.UUID) -> HttpResponse:
    """Extend a pending proposal's review expiry by its TTL (once)."""
    proposal = _proposal_or_404(request, proposal_id)
    try:
        extended = services.proposal_extend_expiry(
            proposal_id=proposal.pk, reviewer=_reviewer(request)
        )
    except ApplicationError as exc:
        return _render_proposal(request, proposal, status=exc.status, error=exc.message)
    messages.success(
        request, f"The review now expires at {extended.expires_at:%Y-%m-%d %H:%M} UTC."
    )
    return redirect("approvals:proposal", proposal_id=proposal.pk)
