"""Writes: the periodic check (drift and brake), lifting a brake, acknowledging alerts,
per-type settings, and drafting a shadow rule from a threshold suggestion."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from approvals import backtest
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
        alert = Alert.objects.create(
            kind=Alert.Kind.DRIFT,
            action_type=action_type,
            model=model,
            prompt_version=prompt,
            title=(
                f"Agreement on {action_type.key} ({model or 'no model'}, "
                f"{prompt or 'no prompt version'}) fell from {was.rate:.0%} to {now_rate.rate:.0%}"
            ),
            data={
                "previous": was.as_dict(),
                "recent": now_rate.as_dict(),
                "p_value": p,
                "window_seconds": window.total_seconds(),
                "at": now.isoformat(),
            },
            created_at=now,
        )
        AuditEvent.objects.create(
            kind="insight.drift", actor="system", data={"alert": alert.pk, "title": alert.title}
        )
        _send_webhook(alert)
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
            alert = Alert.objects.create(
                kind=Alert.Kind.BRAKE,
                action_type=action_type,
                title=f"Automatic approval of {action_type.key} is suspended: {reason}",
                data={"brake": brake.pk, "errors": errors.as_dict(), "lower_bound": low},
                created_at=now,
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
    _send_webhook(alert)
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


def _send_webhook(alert: Alert) -> None:
    """Queue `insight.drift` / `insight.brake` for the alert just created, in its transaction.

    Sent after commit; a failed delivery is retried with backoff (`alert_webhooks_redeliver`,
    on the beat) up to INSIGHTS_WEBHOOK_MAX_ATTEMPTS, always with the same webhook-id, so a
    receiver applies it once.
    """
    if not settings.INSIGHTS_WEBHOOK_URL or not settings.INSIGHTS_WEBHOOK_SECRET:
        return
    Alert.objects.filter(pk=alert.pk).update(webhook_next_at=alert.created_at)
    alert_id = alert.pk
    transaction.on_commit(lambda: alert_webhook_deliver(alert_id=alert_id), robust=True)


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


def alert_webhook_deliver(*, alert_id: int, now: datetime | None = None) -> str | None:
    """Send one alert's webhook if it is due; record the outcome and when to retry.

    Taken by a compare-and-set on `webhook_next_at` (moved past the send's timeout), so two
    workers never send it at once, and a worker that dies mid-send leaves it due again later.
    Returns the recorded status, or None when the alert was not due (or not this caller's).
    """
    from foundation import webhooks

    url, secret = settings.INSIGHTS_WEBHOOK_URL, settings.INSIGHTS_WEBHOOK_SECRET
    now = now or timezone.now()
    timeout = settings.EXECUTION_TIMEOUT.total_seconds()
    lease = now + timedelta(seconds=timeout + 30)
    taken = Alert.objects.filter(pk=alert_id, webhook_next_at__lte=now).update(
        webhook_next_at=lease, webhook_attempts=F("webhook_attempts") + 1
    )
    if not taken:
        return None
    alert = Alert.objects.select_related("action_type").get(pk=alert_id)
    attempts = alert.webhook_attempts
    next_at: datetime | None = None
    if not url or not secret:
        status = "not sent: INSIGHTS_WEBHOOK_URL or _SECRET is no longer set"
    else:
        raw = webhooks.encode(_alert_body(alert))
        headers = webhooks.signed_headers(secrets=[secret], msg_id=f"insight_{alert.pk}", body=raw)
        retry_after = None
        try:
            response = webhooks.post(url=url, body=raw, headers=headers, timeout=timeout)
            code: int | None = response.status_code
            status = str(code)
            retry_after = response.retry_after
        except Exception as exc:  # the alert is recorded either way; the page shows it
            log.warning("insight webhook to %s failed: %s", url, exc)
            code, status = None, f"error: {exc}"
        if code is not None and 200 <= code < 300:
            pass
        elif code == 410:
            status = "410: the receiver is gone; not retried"
        elif attempts >= settings.INSIGHTS_WEBHOOK_MAX_ATTEMPTS:
            status = f"{status}; gave up after {attempts} attempts"
        else:
            next_at = now + webhooks.backoff(attempts, retry_after=retry_after)
            status = f"{status}; attempt {attempts + 1} at {next_at:%H:%M:%S} UTC"
    Alert.objects.filter(pk=alert_id, webhook_next_at=lease).update(
        webhook_status=status[:200], webhook_next_at=next_at
    )
    return status


def alert_webhooks_redeliver(*, now: datetime | None = None, limit: int = 100) -> int:
    """Retry the alert webhooks that are due (beat); how many were sent."""
    now = now or timezone.now()
    due = list(
        Alert.objects.filter(webhook_next_at__lte=now)
        .order_by("webhook_next_at")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(alert_webhook_deliver(alert_id=pk, now=now) is not None for pk in due)
