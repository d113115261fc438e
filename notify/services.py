"""Notification operations: keep a proposal's Slack cards and notices up to date, act on what
reviewers do in Slack (through the same approvals services the web calls), send digests."""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.template.loader import render_to_string
from django.utils import timezone

from approvals import selectors as approval_selectors
from approvals import services as approval_services
from approvals.models import AuditEvent, Proposal, Review
from foundation.errors import ApplicationError, NotFound
from notify import selectors, slack
from notify.models import EmailPreference, Notice, SlackLink, SlackMessage

log = logging.getLogger("gatehouse.notify")
State = Proposal.State
CHANNEL = "slack"  # how decisions made here are marked in the audit trail
SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,39}")


def email_enabled() -> bool:
    return bool(settings.NOTIFY_EMAIL)


def enabled() -> bool:
    return slack.enabled() or email_enabled()


# --- keeping notifications up to date -------------------------------------------------------


def proposal_notify(*, proposal_id: uuid.UUID) -> None:
    """Bring every notification of one proposal up to date. Idempotent: cards are posted once
    per channel and re-rendered only when the proposal has newer audit events; one-off
    notices (emails, reminders) are recorded and sent once."""
    proposal = selectors.proposal_for_notice(proposal_id=proposal_id)
    if proposal is None:
        return
    if slack.enabled():
        _slack_sync(proposal)
    if email_enabled():
        _emails_send(proposal)


def _slack_sync(proposal: Proposal) -> None:
    channels: dict[str, str] = {}
    if proposal.state == State.PENDING_REVIEW:
        for target in selectors.targets(proposal=proposal):
            channel = selectors.channel_of(group=target.group)
            if channel:
                channels.setdefault(channel, target.purpose)
    existing = SlackMessage.objects.filter(proposal=proposal, final=False)
    for channel in existing.values_list("channel", flat=True):
        channels.setdefault(channel, "")
    for channel, purpose in channels.items():
        try:
            _slack_card(proposal.pk, channel, purpose)
        except slack.ERRORS as exc:
            # The card stays as it was; the reconciler tries again.
            log.warning("slack: %s in %s: %s", proposal.pk, channel, slack.error_text(exc))
    if (
        proposal.state == State.PENDING_REVIEW
        and proposal.sla_reminded_at is not None
        and proposal.escalated_at is None  # past the deadline a reminder is moot
    ):
        _slack_reminder(proposal)


def _slack_card(proposal_id: uuid.UUID, channel: str, purpose: str) -> None:
    """Post or update the card of one proposal in one channel, under a row lock, so that two
    workers never post it twice and the last update shows the latest state."""
    with transaction.atomic():
        row, _ = SlackMessage.objects.get_or_create(proposal_id=proposal_id, channel=channel)
        row = SlackMessage.objects.select_for_update().get(pk=row.pk)
        latest = selectors.latest_event_id(proposal_id=proposal_id)
        if row.final or (row.ts and row.synced_event >= latest):
            return
        proposal = selectors.proposal_for_notice(proposal_id=proposal_id)
        assert proposal is not None
        if not row.ts and proposal.state != State.PENDING_REVIEW:
            row.delete()  # decided before its card went out: nothing to ask anyone
            return
        status = selectors.status_line(proposal=proposal)
        heading = (
            ":rotating_light: *Escalated*: the review SLA was breached"
            if purpose == "escalation"
            else ""
        )
        blocks = slack.proposal_blocks(proposal, status, heading=heading)
        text = slack.fallback_text(proposal, status)
        api = slack.client()
        if row.ts:
            api.chat_update(channel=channel, ts=row.ts, text=text, blocks=blocks)
        else:
            response = api.chat_postMessage(channel=channel, text=text, blocks=blocks)
            row.ts = str(response["ts"])
        row.synced_event = latest
        row.final = proposal.is_decided
        row.updated_at = timezone.now()
        row.save()


def _notice_once(proposal: Proposal, kind: str, recipient: str) -> bool:
    """Record a notice inside the caller's transaction; False when it was sent already."""
    try:
        with transaction.atomic():
            Notice.objects.create(proposal=proposal, kind=kind, recipient=recipient)
    except IntegrityError:
        return False
    return True


def _slack_reminder(proposal: Proposal) -> None:
    for message in SlackMessage.objects.filter(proposal=proposal).exclude(ts=""):
        with transaction.atomic():
            if not _notice_once(proposal, "reminder", f"slack:{message.channel}"):
                continue
            due = proposal.review_due_at
            text = (
                f":alarm_clock: 80% of the review SLA has passed; a decision is due at "
                f"{due:%Y-%m-%d %H:%M} UTC."
                if due
                else ":alarm_clock: The review SLA is nearly up."
            )
            try:
                slack.client().chat_postMessage(
                    channel=message.channel, thread_ts=message.ts, text=text
                )
            except slack.ERRORS as exc:
                transaction.set_rollback(True)  # not sent: the next sync tries again
                log.warning("slack reminder for %s: %s", proposal.pk, slack.error_text(exc))


def _emails_send(proposal: Proposal) -> None:
    if proposal.state != State.PENDING_REVIEW:
        return
    action_type = proposal.action_type
    wanted: list[tuple[str, Any]] = []
    for target in selectors.targets(proposal=proposal):
        if target.purpose == "review":
            if action_type.risk == "high":
                wanted.append(("new", target.group))
            if proposal.sla_reminded_at is not None and proposal.escalated_at is None:
                wanted.append(("reminder", target.group))
        else:
            wanted.append(("escalation", target.group))
    for kind, group in wanted:
        for user in selectors.immediate_recipients(group=group, proposal=proposal):
            try:
                _email_once(proposal, kind, user)
            except Exception:  # not recorded as sent: the reconciler tries again
                log.warning(
                    "email %s for %s to %s failed", kind, proposal.pk, user.pk, exc_info=True
                )


_SUBJECTS = {
    "new": "High-risk proposal waits for review: {summary}",
    "reminder": "Review due soon: {summary}",
    "escalation": "Escalated, review SLA breached: {summary}",
}


def one_line(text: str, limit: int = 120) -> str:
    """Safe for a mail header: no line breaks, bounded."""
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _email_once(proposal: Proposal, kind: str, user: User) -> None:
    with transaction.atomic():
        if not _notice_once(proposal, kind, f"email:{user.email.lower()}"):
            return
        body = render_to_string(
            "notify/email/proposal.txt",
            {"p": proposal, "kind": kind, "url": slack.proposal_url(proposal.pk), "user": user},
        )
        subject = _SUBJECTS[kind].format(summary=one_line(proposal.summary))
        # An exception rolls the notice back: the next sync or the reconciler sends it again.
        send_mail(subject, body, None, [user.email])


def notify_reconcile(*, now: datetime | None = None, limit: int = 200) -> int:
    """Re-sync what a lost task left behind: pending proposals whose group has a channel but
    no card, cards older than their proposal's latest event, and pending proposals with an
    SLA mark (their notices are sent once, so re-checking them costs no duplicates)."""
    if not enabled():
        return 0
    now = now or timezone.now()
    ids: dict[uuid.UUID, None] = {}
    if slack.enabled():
        unposted = Proposal.objects.filter(
            state=State.PENDING_REVIEW,
            action_type__reviewer_group__slack__isnull=False,
        ).exclude(Exists(SlackMessage.objects.filter(proposal=OuterRef("pk"))))
        stale = SlackMessage.objects.filter(final=False).filter(
            Exists(
                AuditEvent.objects.filter(
                    proposal_id=OuterRef("proposal_id"), id__gt=OuterRef("synced_event")
                )
            )
        )
        ids.update(dict.fromkeys(unposted.values_list("pk", flat=True)[:limit]))
        ids.update(dict.fromkeys(stale.values_list("proposal_id", flat=True)[:limit]))
    marked = Proposal.objects.filter(state=State.PENDING_REVIEW).filter(
        Q(sla_reminded_at__isnull=False)
        | Q(escalated_at__isnull=False)
        | Q(action_type__risk="high", created_at__gte=now - timedelta(days=1))
    )
    ids.update(dict.fromkeys(marked.values_list("pk", flat=True)[:limit]))
    for proposal_id in ids:
        proposal_notify(proposal_id=proposal_id)
    return len(ids)


# --- digests --------------------------------------------------------------------------------


def digests_send(*, now: datetime | None = None) -> int:
    """Email each digest reader what waits for them, once per their interval. Returns how many
    emails went out."""
    if not email_enabled():
        return 0
    now = now or timezone.now()
    sent = 0
    readers = (
        EmailPreference.objects.filter(mode=EmailPreference.Mode.DIGEST, user__is_active=True)
        .exclude(user__email="")
        .select_related("user")
    )
    for preference in readers:
        last = preference.last_digest_at
        if last is not None and last + timedelta(minutes=preference.digest_minutes) > now:
            continue
        try:
            sent += _digest_send(preference, now)
        except Exception:  # the interval is not advanced: the next run tries again
            log.warning("digest for %s failed", preference.user_id, exc_info=True)
    return sent


def _digest_send(preference: EmailPreference, now: datetime) -> bool:
    last = preference.last_digest_at
    with transaction.atomic():
        # Compare-and-set on the last send: of two workers, one sends.
        claimed = EmailPreference.objects.filter(
            pk=preference.pk,
            **({"last_digest_at": last} if last else {"last_digest_at__isnull": True}),
        ).update(last_digest_at=now)
        if not claimed:
            return False
        page = approval_selectors.queue_for_reviewer(
            user=preference.user, filters=approval_selectors.QueueFilters(due_first=True), limit=50
        )
        if not page.rows:
            return False
        body = render_to_string(
            "notify/email/digest.txt",
            {
                "rows": [(p, slack.proposal_url(p.pk)) for p in page.rows],
                "more": bool(page.next_cursor),
                "queue_url": settings.SITE_URL + "/",
                "user": preference.user,
            },
        )
        count = f"{len(page.rows)}{'+' if page.next_cursor else ''}"
        subject = f"Gatehouse: {count} proposals wait for review"
        send_mail(subject, body, None, [preference.user.email])
    return True


def email_preference_save(*, user: User, mode: str, digest_minutes: int) -> EmailPreference:
    if mode not in EmailPreference.Mode.values:
        raise ApplicationError(
            f"Unknown email mode {mode!r}.",
            status=422,
            code="validation-error",
            errors=[{"loc": ["mode"], "msg": "one of " + ", ".join(EmailPreference.Mode.values)}],
        )
    if not 5 <= digest_minutes <= 7 * 24 * 60:
        raise ApplicationError(
            "The digest interval must be between 5 minutes and a week.",
            status=422,
            code="validation-error",
            errors=[{"loc": ["digest_minutes"], "msg": "between 5 and 10080"}],
        )
    preference, _ = EmailPreference.objects.update_or_create(
        user=user, defaults={"mode": mode, "digest_minutes": digest_minutes}
    )
    return preference


# --- Slack identities -----------------------------------------------------------------------


def slack_link(
    *, user: User, slack_user_id: str, method: str = SlackLink.Method.COMMAND
) -> SlackLink:
    """Make `slack_user_id` act as `user` (replacing either side's previous link)."""
    if not SLACK_USER_ID.fullmatch(slack_user_id):
        raise ApplicationError(
            f"{slack_user_id!r} is not a Slack user id (U… or W…).",
            status=422,
            code="validation-error",
            errors=[{"loc": ["slack_user_id"], "msg": "a Slack user id such as U0123ABCD"}],
        )
    with transaction.atomic():
        SlackLink.objects.filter(Q(user=user) | Q(slack_user_id=slack_user_id)).delete()
        link = SlackLink.objects.create(user=user, slack_user_id=slack_user_id, method=method)
        AuditEvent.objects.create(
            kind="reviewer.slack_linked",
            actor="system",
            data={
                "reviewer": user.get_username(),
                "slack_user_id": slack_user_id,
                "method": method,
            },
        )
    return link


def slack_link_by_email(*, user: User) -> SlackLink:
    """Link the Slack account that has this reviewer's email address (users.lookupByEmail)."""
    if not user.email:
        raise ApplicationError(f"{user.get_username()} has no email address.", code="no-email")
    try:
        response = slack.client().users_lookupByEmail(email=user.email)
    except slack.ERRORS as exc:
        raise ApplicationError(
            f"Slack has no user with {user.email}: {slack.error_text(exc)}", code="not-in-slack"
        ) from None
    return slack_link(
        user=user, slack_user_id=str(response["user"]["id"]), method=SlackLink.Method.EMAIL
    )


def _reviewer_for(slack_user_id: str) -> User | None:
    """The linked reviewer; an unlinked Slack user is linked when Slack confirms an email
    address that exactly one active Gatehouse user has."""
    reviewer = selectors.reviewer_for_slack_user(slack_user_id=slack_user_id)
    if reviewer is not None:
        return reviewer
    try:
        info = slack.client().users_info(user=slack_user_id)
    except slack.ERRORS:
        return None
    profile = (info.get("user") or {}).get("profile") or {}
    email = profile.get("email")
    if (
        not isinstance(email, str)
        or not email
        or not (info.get("user") or {}).get("is_email_confirmed")
    ):
        return None
    matches = list(User.objects.filter(email__iexact=email, is_active=True)[:2])
    if len(matches) != 1 or SlackLink.objects.filter(user=matches[0]).exists():
        return None
    slack_link(user=matches[0], slack_user_id=slack_user_id, method=SlackLink.Method.EMAIL)
    return matches[0]


# --- interactions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Interaction:
    """The parts of a verified Slack interaction Gatehouse acts on (see views.parse_interaction)."""

    kind: str  # approve, reject (open the modal), reject_submit, reject_closed
    slack_user_id: str
    proposal_id: uuid.UUID
    payload_hash: str
    channel: str
    trigger_id: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "proposal_id": str(self.proposal_id)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interaction:
        return cls(**{**data, "proposal_id": uuid.UUID(data["proposal_id"])})


NOT_LINKED = (
    "Your Slack account is not linked to a Gatehouse reviewer, so nothing was changed. "
    "Ask an admin to link it (manage.py link_slack), or use the same confirmed email address "
    "in Slack as in Gatehouse."
)


def slack_interaction_handle(*, interaction: Interaction) -> str:
    """Act on a button or the reject form as the linked reviewer, with the web's rules (the
    same services). Anything refused is told to the user alone (an ephemeral message) and
    changes nothing. Returns a word for the log."""
    reviewer = _reviewer_for(interaction.slack_user_id)
    if reviewer is None:
        _ephemeral(interaction, NOT_LINKED)
        return "not-linked"
    try:
        if interaction.kind == "reject_closed":
            approval_services.claim_release(
                proposal_id=interaction.proposal_id, reviewer=reviewer, channel=CHANNEL
            )
            return "released"
        if interaction.kind == "reject":
            return _open_reject_form(interaction, reviewer)
        return _decide(interaction, reviewer)
    except NotFound:
        _ephemeral(
            interaction, "You may not review this proposal in Gatehouse; nothing was changed."
        )
        return "not-found"
    except ApplicationError as exc:
        _ephemeral(interaction, f"{exc.message} Nothing was changed.")
        return exc.code


def _claim(interaction: Interaction, reviewer: User) -> bool:
    """Claim (or renew) as the web does on opening a proposal; tell the user if someone else
    holds it. Returns whether this reviewer holds it now."""
    result = approval_services.claim_acquire(
        proposal_id=interaction.proposal_id, reviewer=reviewer, channel=CHANNEL
    )
    if not result.acquired:
        holder = result.claim.reviewer.get_username()
        _ephemeral(interaction, f"{holder} is reviewing this proposal now; nothing was changed.")
    return result.acquired


def _open_reject_form(interaction: Interaction, reviewer: User) -> str:
    if not _claim(interaction, reviewer):
        return "claimed-by-other"
    proposal = approval_selectors.proposal_for_reviewer(
        user=reviewer, proposal_id=interaction.proposal_id
    )
    view = slack.reject_modal(
        proposal=proposal, payload_hash=interaction.payload_hash, channel=interaction.channel
    )
    try:
        slack.client().views_open(trigger_id=interaction.trigger_id, view=view)
    except slack.ERRORS as exc:
        approval_services.claim_release(proposal_id=proposal.pk, reviewer=reviewer, channel=CHANNEL)
        _ephemeral(interaction, "The reject form could not open in time; press Reject again.")
        return str(slack.error_text(exc))
    return "form-opened"


def _decide(interaction: Interaction, reviewer: User) -> str:
    proposal = approval_selectors.proposal_for_reviewer(
        user=reviewer, proposal_id=interaction.proposal_id
    )
    verdict = Review.Verdict.APPROVE if interaction.kind == "approve" else Review.Verdict.REJECT
    if (
        verdict == Review.Verdict.APPROVE
        and slack.redact(proposal.effective_payload, proposal.action_type.redacted_fields or [])[1]
    ):
        # The card withholds fields: approving means seeing all of it, on the proposal page.
        raise ApplicationError(
            "Some fields of this proposal are not shown in Slack; approve it on its page.",
            status=403,
            code="approve-on-web",
        )
    held_before = proposal.live_claim is not None and proposal.live_claim.reviewer_id == reviewer.pk
    if not _claim(interaction, reviewer):
        return "claimed-by-other"
    try:
        decided = approval_services.proposal_decide(
            proposal=proposal,
            reviewer=reviewer,
            verdict=verdict,
            comment=interaction.reason,
            seen_payload_hash=interaction.payload_hash,
            channel=CHANNEL,
        )
    except ApplicationError:
        if not held_before:  # leave nobody locked out by a claim this click made
            approval_services.claim_release(
                proposal_id=proposal.pk, reviewer=reviewer, channel=CHANNEL
            )
        raise
    if decided.state == State.PENDING_REVIEW:
        _ephemeral(interaction, "Approval recorded; a second reviewer must approve it too.")
        return "approval-recorded"
    return str(decided.state)


def _ephemeral(interaction: Interaction, text: str) -> None:
    if not interaction.channel:
        return
    try:
        slack.client().chat_postEphemeral(
            channel=interaction.channel, user=interaction.slack_user_id, text=text
        )
    except slack.ERRORS as exc:
        log.warning(
            "slack: could not tell %s: %s", interaction.slack_user_id, slack.error_text(exc)
        )


def interaction_parse(payload: Any) -> Interaction | None:
    """The interaction a verified payload asks for, or None for one Gatehouse ignores (the
    Open button, anything else). Raises ValueError for a malformed one."""
    if not isinstance(payload, dict):
        raise ValueError("the payload must be an object")
    kind = payload.get("type")
    user = payload.get("user") or {}
    slack_user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(slack_user_id, str) or not slack_user_id:
        raise ValueError("user.id is missing")
    if kind == "block_actions":
        actions = payload.get("actions")
        if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
            raise ValueError("actions is missing")
        action = actions[0]
        if action.get("action_id") not in {"approve", "reject"}:
            return None
        reference = _reference(action.get("value"))
        channel = (
            (payload.get("channel") or {}).get("id")
            or (payload.get("container") or {}).get("channel_id")
            or ""
        )
        return Interaction(
            kind=str(action["action_id"]),
            slack_user_id=slack_user_id,
            proposal_id=reference[0],
            payload_hash=reference[1],
            channel=str(channel)[:40],
            trigger_id=str(payload.get("trigger_id") or "")[:200],
        )
    if kind in {"view_submission", "view_closed"}:
        view = payload.get("view")
        if not isinstance(view, dict) or view.get("callback_id") != slack.REJECT_CALLBACK:
            return None
        metadata = _reference(view.get("private_metadata"))
        reason = ""
        if kind == "view_submission":
            values = (view.get("state") or {}).get("values") or {}
            reason = (
                ((values.get(slack.REASON_BLOCK) or {}).get(slack.REASON_INPUT) or {}).get("value")
            ) or ""
            if not isinstance(reason, str):
                raise ValueError("the reason must be text")
        return Interaction(
            kind="reject_submit" if kind == "view_submission" else "reject_closed",
            slack_user_id=slack_user_id,
            proposal_id=metadata[0],
            payload_hash=metadata[1],
            channel=metadata[2][:40],
            reason=reason.strip()[:2000],
        )
    return None


def _reference(text: Any) -> tuple[uuid.UUID, str, str]:
    """(proposal id, payload hash, channel) from a button value or the modal's metadata."""
    if not isinstance(text, str) or len(text) > 2000:
        raise ValueError("the reference is missing")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the reference must be an object")
    payload_hash = data.get("h")
    if not isinstance(payload_hash, str) or not re.fullmatch(r"[0-9a-f]{64}", payload_hash):
        raise ValueError("the payload hash is malformed")
    channel = data.get("c", "")
    return uuid.UUID(str(data.get("p"))), payload_hash, channel if isinstance(channel, str) else ""
