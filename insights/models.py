"""What insights keeps: per-type settings, audit samples, alerts and brakes.

Agreement itself is not stored: it is derived from decided proposals (selectors.py).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from approvals.models import ActionType, OutboxMessage, Proposal, Rule

_UNIT = [MinValueValidator(0.0), MaxValueValidator(1.0)]


class TypeSettings(models.Model):
    """Audit sampling and the error target of one action type (defaults apply without a row)."""

    action_type = models.OneToOneField(
        ActionType, on_delete=models.CASCADE, related_name="insight_settings"
    )
    audit_fraction = models.FloatField(
        default=0.0,
        validators=_UNIT,
        help_text="Share of would-be automatic approvals sent to review as audit samples",
    )
    error_target = models.FloatField(
        default=0.02,
        validators=_UNIT,
        help_text="Highest acceptable error rate of automatic approvals (0.02 = 2%)",
    )
    brake_enabled = models.BooleanField(
        default=True, help_text="Suspend automatic approval when audits show the target is missed"
    )

    class Meta:
        verbose_name = "insight settings"
        verbose_name_plural = "insight settings"

    def __str__(self) -> str:
        return f"insights for {self.action_type}"


class AuditSample(models.Model):
    """A proposal the rules would have approved, sent to review instead to measure them."""

    proposal = models.OneToOneField(Proposal, on_delete=models.CASCADE, related_name="audit")
    action_type = models.ForeignKey(ActionType, on_delete=models.CASCADE, related_name="+")
    fraction = models.FloatField(help_text="The sampling fraction in force")
    rule = models.CharField(max_length=200, help_text="The rule that would have approved")
    rule_version = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["action_type", "created_at"], name="audit_type_time")]

    def __str__(self) -> str:
        return f"audit sample {self.proposal_id}"


class Alert(models.Model):
    class Kind(models.TextChoices):
        DRIFT = "drift"
        BRAKE = "brake"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    action_type = models.ForeignKey(ActionType, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=200, blank=True)
    prompt_version = models.CharField(max_length=200, blank=True)
    title = models.CharField(max_length=300)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The alert's webhook in approvals' outbox, written with the alert; empty without a webhook.
    webhook = models.OneToOneField(
        OutboxMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        permissions = [("acknowledge_alert", "Can acknowledge an insights alert")]
        # The open alerts (the banner, the metrics gauge) without reading acknowledged ones.
        indexes = [
            models.Index(
                fields=["kind"], condition=models.Q(acknowledged_at__isnull=True), name="alert_open"
            )
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def webhook_status(self) -> str:
        """What became of the webhook, in a few words ('' without one)."""
        message = self.webhook
        if message is None:
            return ""
        if message.status == OutboxMessage.Status.DELIVERED:
            return (
                "delivered" if message.attempts <= 1 else f"delivered (attempt {message.attempts})"
            )
        if message.status == OutboxMessage.Status.FAILED:
            return f"failed: {message.last_error}"
        if message.locked_until is not None and message.locked_until > timezone.now():
            return f"sending (attempt {message.attempts})"
        if message.attempts == 0:
            return "queued"
        retry = f"attempt {message.attempts + 1} at {message.next_attempt_at:%H:%M:%S} UTC"
        return f"{message.last_error}; {retry}" if message.last_error else retry


class Brake(models.Model):
    """Automatic approval of one action type suspended until an admin lifts it."""

    action_type = models.ForeignKey(ActionType, on_delete=models.CASCADE, related_name="brakes")
    engaged_at = models.DateTimeField(default=timezone.now)
    reason = models.TextField()
    errors = models.PositiveIntegerField()
    audited = models.PositiveIntegerField()
    target = models.FloatField()
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    lift_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-engaged_at"]
        permissions = [("lift_brake", "Can lift a brake (resume automatic approval)")]
        constraints = [
            models.UniqueConstraint(
                fields=["action_type"],
                condition=models.Q(lifted_at__isnull=True),
                name="one_engaged_brake_per_type",
            )
        ]

    def __str__(self) -> str:
        state = "lifted" if self.lifted_at else "engaged"
        return f"brake on {self.action_type} ({state})"

    @property
    def engaged(self) -> bool:
        return self.lifted_at is None


class RuleDraft(models.Model):
    """A shadow rule drafted from a threshold suggestion, with the backtest run when drafted."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="+")
    action_type = models.ForeignKey(ActionType, on_delete=models.CASCADE, related_name="+")
    threshold = models.FloatField()
    error_target = models.FloatField()
    backtest = models.JSONField()
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("draft_rule", "Can draft a shadow rule from a threshold suggestion")]

    def __str__(self) -> str:
        return f"{self.rule} (confidence >= {self.threshold:g})"
