"""What notify remembers: where groups talk, who is who in Slack, how reviewers want email, and
which messages it posted and notices it sent (so that each is sent once and updated in place)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone

from approvals.models import Proposal


class GroupChannel(models.Model):
    """The Slack channel of a reviewer group: proposals its members may decide are posted there."""

    group = models.OneToOneField(
        Group, on_delete=models.CASCADE, primary_key=True, related_name="slack"
    )
    slack_channel = models.CharField(
        max_length=40, help_text="Channel id such as C0123ABCD (invite the Gatehouse app to it)"
    )

    def __str__(self) -> str:
        return f"{self.group.name} → {self.slack_channel}"


class SlackLink(models.Model):
    """A Slack user who acts as this Gatehouse reviewer."""

    class Method(models.TextChoices):
        EMAIL = "email"  # the same confirmed email address in Slack as in Gatehouse
        COMMAND = "command"  # manage.py link_slack USER SLACK_ID, or the admin

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_link"
    )
    slack_user_id = models.CharField(max_length=40, unique=True)
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.COMMAND)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.slack_user_id} = {self.user}"


class EmailPreference(models.Model):
    class Mode(models.TextChoices):
        IMMEDIATE = "immediate", "At once for high-risk proposals, SLA reminders and escalations"
        DIGEST = "digest", "A digest of what waits, every few minutes"
        NONE = "none", "No email"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="email_preference"
    )
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.NONE)
    digest_minutes = models.PositiveIntegerField(default=60)
    last_digest_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user}: {self.mode}"


class SlackMessage(models.Model):
    """A proposal's card in a channel. `synced_event` is the last audit event id it shows: the
    card is re-rendered when the proposal has a newer one."""

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=40)
    ts = models.CharField(max_length=40, blank=True)
    synced_event = models.BigIntegerField(default=0)
    final = models.BooleanField(default=False, help_text="Shows a final state; never changes")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["proposal", "channel"], name="slack_message_once")
        ]
        indexes = [
            models.Index(
                fields=["proposal"], name="slack_message_open", condition=models.Q(final=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.proposal_id} in {self.channel}"


class Notice(models.Model):
    """A one-off notification that was sent (an email, a reminder in a thread): sent once."""

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=30)  # new, reminder, escalation
    recipient = models.CharField(max_length=254)  # email:ADDRESS or slack:CHANNEL
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["proposal", "kind", "recipient"], name="notice_once")
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.proposal_id} to {self.recipient}"
