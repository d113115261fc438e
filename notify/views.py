"""Slack's Request URL and the reviewer's notification settings."""

from __future__ import annotations

import json
import logging
from functools import partial
from urllib.parse import parse_qs

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from foundation.errors import ApplicationError, problem
from notify import services, slack, tasks
from notify.models import EmailPreference

log = logging.getLogger("gatehouse.notify")


@csrf_exempt  # Slack cannot send a CSRF token; its signature stands in for it
@require_POST
def slack_interactions(request: HttpRequest) -> HttpResponse:
    """Verify, parse, enqueue, answer: well within Slack's 3 seconds. The work (claims,
    decisions, the reject form) happens in notify.handle_interaction."""
    if not slack.enabled():
        raise Http404("Slack is not configured.")
    body = request.body
    if not slack.signature_is_valid(
        body=body,
        timestamp=request.headers.get("X-Slack-Request-Timestamp"),
        signature=request.headers.get("X-Slack-Signature"),
    ):
        return problem(401, "bad-signature", "The request is not signed by Slack, or is stale.")
    try:
        fields = parse_qs(body.decode(), strict_parsing=False)
        interaction = services.interaction_parse(json.loads(fields["payload"][0]))
    except (KeyError, IndexError, UnicodeDecodeError, ValueError) as exc:
        return problem(400, "bad-payload", f"Not a Slack interaction payload: {exc}")
    if interaction is None:
        return HttpResponse(status=200)
    if interaction.kind == "reject_submit" and not interaction.reason:
        return JsonResponse(
            {
                "response_action": "errors",
                "errors": {slack.REASON_BLOCK: "A rejection needs a reason."},
            }
        )
    transaction.on_commit(partial(tasks.handle_interaction.delay, interaction.as_dict()))
    return HttpResponse(status=200)


@login_required
@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    preference = EmailPreference.objects.filter(user=request.user).first()
    error = ""
    status = 200
    if request.method == "POST":
        try:
            minutes = int(request.POST.get("digest_minutes", "60"))
        except ValueError:
            minutes = -1
        try:
            services.email_preference_save(
                user=request.user, mode=request.POST.get("mode", ""), digest_minutes=minutes
            )
        except ApplicationError as exc:
            error, status = exc.message, exc.status
        else:
            messages.success(request, "Notification settings saved.")
            return redirect("notify:preferences")
    context = {
        "preference": preference,
        "modes": EmailPreference.Mode.choices,
        "mode": preference.mode if preference else EmailPreference.Mode.NONE,
        "digest_minutes": preference.digest_minutes if preference else 60,
        "slack_user": getattr(getattr(request.user, "slack_link", None), "slack_user_id", ""),
        "email_on": services.email_enabled(),
        "slack_on": slack.enabled(),
        "error": error,
    }
    return render(request, "notify/preferences.html", context, status=status)
