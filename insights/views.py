"""/insights/: agreement, drift alerts, audits, calibration and the brake, per action type."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from approvals import selectors as approvals_selectors
from approvals.models import ActionType
from foundation.errors import ApplicationError
from insights import selectors, services
from insights.models import Alert


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # login_required ran first
    return request.user


def _visible_type_or_404(request: HttpRequest, key: str) -> ActionType:
    action_type = (
        approvals_selectors.visible_action_types(user=request.user).filter(key=key).first()
    )
    if action_type is None:
        raise Http404("No such action type.")
    return action_type


def _require(request: HttpRequest, *permissions: str) -> None:
    """403 for a user who sees the type but lacks the action's permission (services.py)."""
    if not _user(request).has_perms(permissions):
        raise PermissionDenied("You do not have the permission for this action.")


def _same_site(request: HttpRequest, target: str | None, fallback: str) -> str:
    """`next` only when it is a path of this site: never an open redirect."""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    types = list(approvals_selectors.visible_action_types(user=request.user))
    cards = [selectors.type_card(action_type=t) for t in types]
    return render(
        request,
        "insights/index.html",
        {"cards": cards, "alerts": selectors.open_alerts(action_types=types)},
    )


@login_required
@require_GET
def action_type_page(request: HttpRequest, key: str) -> HttpResponse:
    action_type = _visible_type_or_404(request, key)
    context = selectors.type_overview(action_type=action_type)
    context["types"] = approvals_selectors.visible_action_types(user=request.user)
    return render(request, "insights/type.html", context)


@login_required
@require_POST
def settings_save(request: HttpRequest, key: str) -> HttpResponse:
    action_type = _visible_type_or_404(request, key)
    _require(request, services.CHANGE_SETTINGS)
    try:
        services.type_settings_save(
            action_type=action_type,
            audit_fraction=float(request.POST.get("audit_percent", "0")) / 100,
            error_target=float(request.POST.get("target_percent", "2")) / 100,
            brake_enabled=request.POST.get("brake_enabled") == "on",
        )
        messages.success(request, f"Settings of {key} saved.")
    except (ValueError, ApplicationError) as exc:
        messages.error(request, f"Not saved: {exc}")
    return redirect(reverse("insights:type", args=[key]) + "#settings")


@login_required
@require_POST
def draft_rule(request: HttpRequest, key: str) -> HttpResponse:
    action_type = _visible_type_or_404(request, key)
    _require(request, *services.DRAFT_RULE)
    try:
        draft = services.rule_draft(
            action_type=action_type,
            threshold=float(request.POST.get("threshold", "")),
            user=_user(request),
        )
        messages.success(
            request, f"Drafted the shadow rule “{draft.rule.name}”; its backtest is below."
        )
    except (ValueError, ApplicationError) as exc:
        messages.error(request, f"No rule drafted: {exc}")
    return redirect(reverse("insights:type", args=[key]) + "#drafts")


@login_required
@require_POST
def lift_brake(request: HttpRequest, key: str) -> HttpResponse:
    action_type = _visible_type_or_404(request, key)
    _require(request, services.LIFT_BRAKE)
    try:
        services.brake_lift(
            action_type=action_type, user=_user(request), note=request.POST.get("note", "")
        )
        messages.success(request, f"Automatic approval of {key} resumed.")
    except ApplicationError as exc:
        messages.error(request, str(exc))
    return redirect(reverse("insights:type", args=[key]))


@login_required
@require_POST
def alert_acknowledge(request: HttpRequest, alert_id: int) -> HttpResponse:
    alert = get_object_or_404(
        Alert,
        pk=alert_id,
        action_type__in=approvals_selectors.visible_action_types(user=request.user),
    )
    _require(request, services.ACKNOWLEDGE_ALERT)
    services.alert_acknowledge(alert=alert, user=_user(request))
    return redirect(_same_site(request, request.POST.get("next"), reverse("insights:index")))
