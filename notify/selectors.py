"""Reads for notifications: who is told, where, and what a card says about a proposal's state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.contrib.auth.models import Group, User
from django.db.models import Max, Prefetch

from approvals import selectors as approval_selectors
from approvals.models import AuditEvent, Proposal, Review
from notify.models import EmailPreference, GroupChannel, SlackLink
from notify.slack import escape

State = Proposal.State


def proposal_for_notice(*, proposal_id: uuid.UUID) -> Proposal | None:
    return (
        Proposal.objects.filter(pk=proposal_id)
        .select_related(
            "service",
            "action_type__reviewer_group",
            "action_type__escalation_group",
            "decision_reviewer",
            "claim__reviewer",
        )
        .prefetch_related(Prefetch("reviews", queryset=Review.objects.select_related("reviewer")))
        .first()
    )


def latest_event_id(*, proposal_id: uuid.UUID) -> int:
    return AuditEvent.objects.filter(proposal_id=proposal_id).aggregate(top=Max("id"))["top"] or 0


@dataclass(frozen=True)
class Target:
    """A group that hears about a proposal, and why: `review` (it decides it) or `escalation`."""

    group: Group
    purpose: str


def targets(*, proposal: Proposal) -> list[Target]:
    action_type = proposal.action_type
    found = []
    if action_type.reviewer_group is not None:
        found.append(Target(action_type.reviewer_group, "review"))
    if proposal.escalated_at is not None and action_type.escalation_group is not None:
        found.append(Target(action_type.escalation_group, "escalation"))
    return found


def channel_of(*, group: Group) -> str:
    return (
        GroupChannel.objects.filter(group=group).values_list("slack_channel", flat=True).first()
        or ""
    )


def immediate_recipients(*, group: Group, proposal: Proposal) -> list[User]:
    """Members who asked for email at once, with an address, who did not raise the proposal."""
    users = User.objects.filter(
        groups=group,
        is_active=True,
        email_preference__mode=EmailPreference.Mode.IMMEDIATE,
    ).exclude(email="")
    return [
        u
        for u in users.order_by("pk")
        if not proposal.raised_by
        or proposal.raised_by not in approval_selectors.reviewer_identities(user=u)
    ]


def reviewer_for_slack_user(*, slack_user_id: str) -> User | None:
    link = SlackLink.objects.select_related("user").filter(slack_user_id=slack_user_id).first()
    if link is None or not link.user.is_active:
        return None
    return link.user


def decision_channel(*, proposal: Proposal) -> str:
    """Where the deciding reviewer decided (web or slack), from the audit trail."""
    data = (
        AuditEvent.objects.filter(
            proposal=proposal, kind__in=["proposal.approved", "proposal.rejected"]
        )
        .order_by("-id")
        .values_list("data", flat=True)
        .first()
    )
    return str(data.get("channel", "web")) if isinstance(data, dict) else "web"


def status_line(*, proposal: Proposal) -> str:
    """One mrkdwn line (escaped) saying where the proposal is."""
    if proposal.state == State.PENDING_REVIEW:
        parts = ["Waiting for review"]
        claim = proposal.live_claim
        if claim is not None:
            parts.append(
                f"being reviewed by {escape(claim.reviewer.get_username())} "
                f"until {claim.expires_at:%H:%M} UTC"
            )
        needed = proposal.approvals_needed
        if needed > 1:
            parts.append(f"{len(proposal.current_approvals)} of {needed} approvals")
        if proposal.escalated_at is not None:
            parts.append(":rotating_light: review SLA breached")
        elif proposal.review_due_at is not None:
            parts.append(f"due {proposal.review_due_at:%Y-%m-%d %H:%M} UTC")
        if proposal.expires_at is not None:
            parts.append(f"expires {proposal.expires_at:%Y-%m-%d %H:%M} UTC")
        return " · ".join(parts)
    if proposal.decided_by == Proposal.DecidedBy.REVIEWER and proposal.decision_reviewer:
        verdict = "Approved" if proposal.decision_outcome == "approve" else "Rejected"
        where = "in Slack" if decision_channel(proposal=proposal) == "slack" else "on the web"
        line = f"*{verdict}* by {escape(proposal.decision_reviewer.get_username())} {where}"
        if proposal.decision_outcome == "reject" and proposal.decision_reason:
            line += f": {escape(proposal.decision_reason[:500])}"
    elif proposal.state == State.EXPIRED:
        line = "*Expired*: no reviewer decided before the review expired"
    elif proposal.state == State.CANCELLED:
        line = "*Withdrawn* by the service"
    else:
        line = f"*{escape(proposal.get_decision_outcome_display() or proposal.state)}* by rule"
    if proposal.state in {State.EXECUTING, State.EXECUTED, State.FAILED}:
        line += f" · {proposal.state}"
    return line
