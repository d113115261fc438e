"""Writes: the periodic check (drift and brake), raising an alert with its webhook, lifting a
brake, acknowledging alerts, per-type settings, and drafting a shadow rule from a threshold
suggestion."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import backtest, outbox
from approvals import services as approvals_services
from approvals.models import ActionType, AuditEvent, Rule
from approvals.rules import RuleSpec
from foundation.errors import ApplicationError
from insights import gate, selectors, stats
from insights.models import Alert, Brake, RuleDraft, TypeSettings

log = logging.getLogger("gatehouse.insights")

# What each action on /insights/ asks of a user (superusers have them all); the admin asks the
# same through its model permissions.
CHANGE_SETTINGS = "insights.change_typesettings"
LIFT_BRAKE = "insights.lift_brake"
DRAFT_RULE = ("insights.draft_rule", "approvals.add_rule")
ACKNOWLEDGE_ALERT = "insights.acknowledge_alert"


@dataclass
class CheckResult:
    alerts: list[Alert]
    brakes: list[Brake]


def insights_check(*, now: datetime | None = None) -> CheckResult:
    """The periodic job: drift alerts, then brakes, for every action type."""
    now = now or timezone.now()
    result = CheckResult(alerts=[], brakes=[])
    for action_type in ActionType.objects.all():
        result.alerts.extend(drift_check(action_type=action_type, now=now))
        brake = brake_check(action_type=action_type, now=now)
        if brake is not None:
            result.brakes.append(brake)
    return result


def drift_check(*, action_type: ActionType, now: datetime) -> list[Alert]:
    """Compare agreement in the last window with the window before, per model and prompt version.

    A drop is significant when both windows hold at least INSIGHTS_MIN_VERDICTS verdicts and the
    one-sided two-proportion test gives p < INSIGHTS_DRIFT_ALPHA. A drop stays visible while the
    two windows slide past it (two windows' time), so one is reported once: no new alert for the
    same type, model and prompt version within two windows of the last one.
    """
    window: timedelta = settings.INSIGHTS_WINDOW
    rows = selectors.verdicts(action_type=action_type, since=now - 2 * window, until=now)
    groups: dict[tuple[str, str], tuple[list[Any], list[Any]]] = {}
    for v in rows:
        before, after = groups.setdefault((v.model, v.prompt_version), ([], []))
        (after if v.created_at >= now - window else before).append(v)
    raised = []
    for (model, prompt), (before, after) in sorted(groups.items()):
        minimum = settings.INSIGHTS_MIN_VERDICTS
        if len(before) < minimum or len(after) < minimum:
            continue
        was, now_rate = selectors.agreement(before), selectors.agreement(after)
        p = stats.drop_p_value(was.hits, was.n, now_rate.hits, now_rate.n)
        if p >= settings.INSIGHTS_DRIFT_ALPHA:
            continue
        recent = Alert.objects.filter(
            kind=Alert.Kind.DRIFT,
            action_type=action_type,
            model=model,
            prompt_version=prompt,
            created_at__gt=now - 2 * window,
        )
        if recent.exists():
            continue
        with transaction.atomic():
            alert = alert_raise(
                kind=Alert.Kind.DRIFT,
                action_type=action_type,
                model=model,
                prompt_version=prompt,
                title=(
                    f"Agreement on {action_type.key} ({model or 'no model'}, "
                    f"{prompt or 'no prompt version'}) fell from {was.rate:.0%} "
                    f"to {now_rate.rate:.0%}"
                ),
                data={
                    "previous": was.as_dict(),
                    "recent": now_rate.as_dict(),
                    "p_value": p,
                    "window_seconds": window.total_seconds(),
                    "at": now.isoformat(),
                },
                at=now,
            )
            AuditEvent.objects.create(
                kind="insight.drift", actor="system", data={"alert": alert.pk, "title": alert.title}
            )
        raised.append(alert)
    return raised


def brake_check(*, action_type: ActionType, now: datetime) -> Brake | None:
    """Engage the brake when audits show automatic approvals missing the error target.

    Uses the audit samples of the last window taken since the last lift; engages when there are
    at least INSIGHTS_BRAKE_MIN_SAMPLES verdicts and the one-sided 95% lower bound of their error
    rate is above the type's target: the rise is significant, not noise.
    """
    config = selectors.settings_for(action_type)
    if not config.brake_enabled or selectors.engaged_brake(action_type.pk) is not None:
        return None
    since = now - settings.INSIGHTS_WINDOW
    lifted = selectors.last_lift(action_type)
    if lifted is not None and lifted > since:
        since = lifted
    estimate = selectors.audit_estimate(action_type=action_type, since=since)
    errors = estimate.errors
    if errors.n < settings.INSIGHTS_BRAKE_MIN_SAMPLES:
        return None
    low = stats.lower_bound(errors.hits, errors.n)
    if low <= config.error_target:
        return None
    reason = (
        f"Audited automatic approvals of {action_type.key}: {errors.hits} of {errors.n} were not "
        f"accepted as proposed ({errors.rate:.0%}; at least {low:.1%} with 95% confidence), "
        f"above the target of {config.error_target:.1%}."
    )
    try:
        with transaction.atomic():
            brake = Brake.objects.create(
                action_type=action_type,
                engaged_at=now,
                reason=reason,
                errors=errors.hits,
                audited=errors.n,
                target=config.error_target,
            )
            alert_raise(
                kind=Alert.Kind.BRAKE,
                action_type=action_type,
                title=f"Automatic approval of {action_type.key} is suspended: {reason}",
                data={"brake": brake.pk, "errors": errors.as_dict(), "lower_bound": low},
                at=now,
            )
            AuditEvent.objects.create(
                kind="insight.brake_engaged",
                actor="system",
                data={"brake": brake.pk, "reason": reason},
            )
    except IntegrityError:
        return None  # another check engaged it first
    gate.forget()
    transaction.on_commit(gate.forget)
    return brake


def brake_lift(*, action_type: ActionType, user: User, note: str = "") -> Brake:
    """An admin resumes automatic approval; later audits are judged from now on."""
    if not user.has_perm(LIFT_BRAKE):
        raise ApplicationError(
            "Lifting a brake needs the permission “Can lift a brake”.", status=403, code="forbidden"
        )
    now = timezone.now()
    with transaction.atomic():
        brake = (
            Brake.objects.select_for_update()
            .filter(action_type=action_type, lifted_at__isnull=True)
            .first()
        )
        if brake is None:
            raise ApplicationError(f"No brake is engaged on {action_type.key}.", status=409)
        brake.lifted_at = now
        brake.lifted_by = user
        brake.lift_note = note
        brake.save(update_fields=["lifted_at", "lifted_by", "lift_note"])
        Alert.objects.filter(
            kind=Alert.Kind.BRAKE, action_type=action_type, acknowledged_at__isnull=True
        ).update(acknowledged_at=now, acknowledged_by=user)
        AuditEvent.objects.create(
            kind="insight.brake_lifted",
            actor=f"user:{user.get_username()}",
            data={"brake": brake.pk, "note": note},
        )
    gate.forget()
    transaction.on_commit(gate.forget)
    return brake


def alert_acknowledge(*, alert: Alert, user: User) -> bool:
    if not user.has_perm(ACKNOWLEDGE_ALERT):
        raise ApplicationError(
            "Acknowledging an alert needs the permission “Can acknowledge an insights alert”.",
            status=403,
            code="forbidden",
        )
    return (
        Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_at=timezone.now(), acknowledged_by=user
        )
        == 1
    )


def type_settings_save(
    *, action_type: ActionType, audit_fraction: float, error_target: float, brake_enabled: bool
) -> TypeSettings:
    if not 0 <= audit_fraction <= 1 or not 0 < error_target < 1:
        raise ApplicationError("The audit fraction is within 0..1 and the target within (0, 1).")
    config, _ = TypeSettings.objects.update_or_create(
        action_type=action_type,
        defaults={
            "audit_fraction": audit_fraction,
            "error_target": error_target,
            "brake_enabled": brake_enabled,
        },
    )
    gate.forget()
    transaction.on_commit(gate.forget)
    return config


def rule_draft(*, action_type: ActionType, threshold: float, user: User) -> RuleDraft:
    """Turn a threshold suggestion into a rule in shadow mode and backtest it at once.

    The rule approves proposals of the type at or above the threshold; in shadow mode it is only
    traced. An admin reviews the backtest and switches it to enforce in the rules admin.
    """
    if not all(user.has_perm(p) for p in DRAFT_RULE):
        raise ApplicationError(
            "Drafting a rule needs the permissions “Can draft a shadow rule” and “Can add rule”.",
            status=403,
            code="forbidden",
        )
    if not 0 < threshold <= 1:
        raise ApplicationError("The threshold is a confidence within (0, 1].")
    config = selectors.settings_for(action_type)
    name = f"insights: approve {action_type.key} at confidence >= {threshold:g}"
    rule = Rule.objects.filter(name=name).first() or Rule(name=name)
    rule.description = (
        f"Drafted from the threshold suggestion on /insights/ for a target error rate of "
        f"{config.error_target:.1%}."
    )
    rule.action_type = action_type
    rule.when = f"confidence >= {threshold!r}"
    rule.outcome = "approve"
    rule.reason = f"Confidence at least {threshold:g} (insights threshold)"
    rule.mode = Rule.Mode.SHADOW
    rule.enabled = True
    rule.priority = 500
    approvals_services.rule_save(rule=rule, actor=f"user:{user.get_username()}")
    result = backtest.backtest_rule(candidate=RuleSpec.of(rule))
    return RuleDraft.objects.create(
        rule=rule,
        action_type=action_type,
        threshold=threshold,
        error_target=config.error_target,
        backtest=result.as_dict(),
        created_by=f"user:{user.get_username()}",
    )


def alert_raise(
    *,
    kind: str,
    action_type: ActionType,
    title: str,
    data: dict[str, Any],
    at: datetime,
    model: str = "",
    prompt_version: str = "",
) -> Alert:
    """Record an alert and, with INSIGHTS_WEBHOOK_URL and _SECRET set, its webhook.

    The webhook is a row of approvals' outbox written in this transaction (so it exists exactly
    when the alert does) and sent after commit by the outbox's delivery: a compare-and-set
    lease, attempts with backoff and jitter (at least Retry-After), up to
    INSIGHTS_WEBHOOK_MAX_ATTEMPTS, the same webhook-id `insight_<alert id>` every time, a 410
    ends it (and disables the URL), and the outbox's reconciler re-sends what a crash left.
    The URL and body are fixed now; the secret is read when it is sent (`webhook_secrets`).
    """
    with transaction.atomic():
        alert = Alert.objects.create(
            kind=kind,
            action_type=action_type,
            model=model,
            prompt_version=prompt_version,
            title=title,
            data=data,
            created_at=at,
        )
        if settings.INSIGHTS_WEBHOOK_URL and settings.INSIGHTS_WEBHOOK_SECRET:
            alert.webhook = outbox.webhook_record(
                event=f"insight.{alert.kind}",
                webhook_id=f"insight_{alert.pk}",
                target=settings.INSIGHTS_WEBHOOK_URL,
                body=_alert_body(alert),
                max_attempts=settings.INSIGHTS_WEBHOOK_MAX_ATTEMPTS,
            )
            alert.save(update_fields=["webhook"])
    return alert


def webhook_secrets() -> list[str]:
    """What signs an alert webhook when it is sent (registered with the outbox in apps.py)."""
    return [settings.INSIGHTS_WEBHOOK_SECRET] if settings.INSIGHTS_WEBHOOK_SECRET else []


def _alert_body(alert: Alert) -> dict[str, Any]:
    return {
        "type": f"insight.{alert.kind}",
        "timestamp": alert.created_at.isoformat(),
        "data": {
            "alert": alert.pk,
            "action_type": alert.action_type.key,
            "model": alert.model,
            "prompt_version": alert.prompt_version,
            "title": alert.title,
            **alert.data,
        },
    }
