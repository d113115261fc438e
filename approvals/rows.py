"""The queue's and history's rows in Python: the pages (`approvals/_queue_rows.html`,
`approvals/_history_rows.html`) and the live push (`approvals/_live_update.html`,
approvals/events.py) both render them here, so they stay one piece of code.

As a template it cost 0.48 ms a row, 24 ms of the page's 50 rows (bench/README.md, growth.py):
32 variable lookups, a URL reverse, two `date:'c'`, `timesince` and `until` each. Here it is
the same HTML (tests/approvals/test_queue_row_render.py compares it with the template's output)
from one format string: every value goes through `_escape` (format_html's conditional_escape
without its lazy-string wrapper); only the constant markup below is marked safe. Times are shown
in the current time zone, as the template's `date` filter does (template_localtime), the zone
looked up once per call; the proposal's URL is reversed once per call, script prefix included,
and the row's id put in its place. The history row was a
template too (0.3 ms a row on its page of 50); tests/approvals/test_history_row_render.py holds
it to the template's output the same way.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, tzinfo
from typing import NamedTuple

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
from django.utils.timesince import timesince, timeuntil

from approvals.models import Proposal

_ROW = (
    '<tr id="proposal-{pk}" class="queue-row" data-queue-row data-href="{href}"'
    ' data-action-type="{key}" data-risk="{risk}"{oob}>\n'
    '  <td class="col-summary"><a href="{href}">{summary}</a></td>\n'
    '  <td class="col-type" data-label="Action"><code>{key}</code>{irreversible}</td>\n'
    '  <td class="col-risk" data-label="Risk"><span class="risk risk-{risk}">{risk}'
    '<span class="visually-hidden"> risk</span></span></td>\n'
    '  <td class="col-confidence" data-label="Confidence"><meter min="0" max="1" low="0.5"'
    ' high="0.8" optimum="1" value="{confidence}" aria-hidden="true">{confidence}</meter>'
    ' <span class="num"><span class="visually-hidden">model confidence </span>{confidence}'
    "</span></td>\n"
    '  <td class="col-age" data-label="Age"><time datetime="{created}">{age}</time></td>\n'
    '  <td class="col-due" data-label="Due">{due}</td>\n'
    '  <td class="col-claim" data-label="Claim">{claim}</td>\n'
    "</tr>\n"  # the template file's last newline, which the page and the push both sent
)
_OOB = mark_safe(' hx-swap-oob="true"')  # constant markup
_IRREVERSIBLE = mark_safe(' <span class="tag">irreversible</span>')
_BREACHED = mark_safe(
    '<span class="sla-breached" title="Review SLA breached; escalated">SLA breached</span>'
)
_NOT_CLAIMED = mark_safe(
    '<span class="muted">—<span class="visually-hidden">not claimed</span></span>'
)
_SENTINEL = uuid.UUID(int=0)

_HISTORY_ROW = (
    '<tr id="history-{pk}" data-history-row data-state="{state}" data-decided-by="{by}"'
    ' data-action-type="{key}"{oob}>\n'
    '  <td class="col-summary"><a href="{href}">{summary}</a></td>\n'
    '  <td data-label="Action"><code>{key}</code></td>\n'
    '  <td data-label="State"><span class="badge badge-{state}"><span class="visually-hidden">'
    "State: </span>{state_label}</span></td>\n"
    '  <td data-label="Decided by">{decider}</td>\n'
    '  <td data-label="Reason">{reason}</td>\n'
    '  <td data-label="When"><time datetime="{updated}" title="{updated_title} UTC">{ago} ago'
    "</time></td>\n"
    "</tr>\n"  # the template file's last newline
)
_STATE_LABELS = dict(Proposal.State.choices)


class _Render(NamedTuple):
    """What every row of one render shares: the proposal URL before and after the id, the
    time now and the zone times are shown in (None: as stored, USE_TZ off)."""

    head: str
    tail: str
    now: datetime
    zone: tzinfo | None


_Row = Callable[[Proposal, _Render, bool], str]


def _escape(value: object) -> str:
    """`conditional_escape` without Django's lazy-argument wrapper around `escape` (a third of
    a row's time): markup stays as it is, anything else is escaped as `escape` does."""
    if hasattr(value, "__html__"):
        return str(value.__html__())
    return html.escape(str(value))


def _format(template: str, **values: object) -> SafeString:
    """`format_html` with keyword values: each value escaped, the result marked safe."""
    return SafeString(template.format_map({k: _escape(v) for k, v in values.items()}))


def queue_rows(proposals: Iterable[Proposal], *, oob: bool = False) -> SafeString:
    """Each proposal's row, each followed by another newline (as the page's loop wrote them)."""
    return _each(_row, proposals, oob)


def queue_row(proposal: Proposal, *, oob: bool = False) -> SafeString:
    return _one(_row, proposal, oob)


def _each(row: _Row, proposals: Iterable[Proposal], oob: bool) -> SafeString:
    render = _render()
    return SafeString("".join(f"{row(p, render, oob)}\n" for p in proposals))


def _one(row: _Row, proposal: Proposal, oob: bool) -> SafeString:
    return SafeString(row(proposal, _render(), oob))


def _render() -> _Render:
    """The proposal's URL (script prefix included) around its id, now, and the current zone."""
    head, _, tail = reverse("approvals:proposal", args=[_SENTINEL]).partition(str(_SENTINEL))
    zone = timezone.get_current_timezone() if settings.USE_TZ else None
    return _Render(head, tail, timezone.now(), zone)


def _iso(value: datetime, render: _Render) -> str:
    """`value|date:'c'`: ISO 8601 in the current time zone (what the template engine's
    `template_localtime` did before `date`: aware times converted, naive ones left)."""
    if render.zone is not None and not timezone.is_naive(value):
        value = value.astimezone(render.zone)
    return value.isoformat()


def _row(p: Proposal, render: _Render, oob: bool) -> str:
    action_type = p.action_type
    now = render.now
    if p.escalated_at:
        due = _BREACHED
    elif p.review_due_at:
        due = _format(
            '<time datetime="{at}" title="Review SLA">due in {left}</time>',
            at=_iso(p.review_due_at, render),
            left=timeuntil(p.review_due_at, now, depth=1),
        )
    elif p.expires_at:
        due = _format(
            '<time class="muted" datetime="{at}" title="Review expiry">expires in {left}</time>',
            at=_iso(p.expires_at, render),
            left=timeuntil(p.expires_at, now, depth=1),
        )
    else:
        due = SafeString()
    claim = p.live_claim
    needed = p.approvals_needed
    claim_cell = SafeString()
    if claim:
        claim_cell = _format(
            '<span class="claimed" data-claim-expires="{at}">being reviewed by {who}</span>',
            at=int(claim.expires_at.timestamp()),
            who=claim.reviewer.get_username(),
        )
    if needed > 1:
        claim_cell += _format(
            ' <span class="approvals">{have} of {need} approvals</span>',
            have=len(p.current_approvals),
            need=needed,
        )
    elif not claim:
        claim_cell = _NOT_CLAIMED
    return _ROW.format(
        pk=p.pk,  # a UUID: nothing to escape
        href=_escape(f"{render.head}{p.pk}{render.tail}"),
        key=_escape(action_type.key),
        risk=_escape(action_type.risk),
        oob=_OOB if oob else "",
        summary=_escape(p.summary),
        irreversible=_IRREVERSIBLE if action_type.irreversible else "",
        confidence=f"{p.confidence:.2f}",
        created=_iso(p.created_at, render),
        age=_escape(timesince(p.created_at, now)),
        due=due,
        claim=claim_cell,
    )


def history_rows(proposals: Iterable[Proposal]) -> SafeString:
    """Each decided proposal's row, each followed by another newline (as the page's loop wrote
    them)."""
    return _each(_history_row, proposals, False)


def history_row(proposal: Proposal, *, oob: bool = False) -> SafeString:
    return _one(_history_row, proposal, oob)


def _history_row(p: Proposal, render: _Render, oob: bool) -> str:
    if p.decided_by == Proposal.DecidedBy.REVIEWER:
        reviewer = p.decision_reviewer
        decider = reviewer.get_username() if reviewer is not None else ""
    elif p.decided_by == Proposal.DecidedBy.RULE:
        decider = f"rule {p.decision_rule}"
    else:
        decider = p.decided_by or "—"
    key = p.action_type.key
    updated = p.updated_at
    if render.zone is not None and not timezone.is_naive(updated):
        updated = updated.astimezone(render.zone)
    return _format(
        _HISTORY_ROW,
        pk=p.pk,
        state=p.state,
        by=p.decided_by,
        key=key,
        oob=_OOB if oob else "",
        href=f"{render.head}{p.pk}{render.tail}",
        summary=p.summary,
        state_label=_STATE_LABELS.get(p.state, p.state),
        decider=decider,
        reason=Truncator(p.decision_reason).chars(80),
        updated=updated.isoformat(),
        # `date:'Y-m-d H:i:s'`, in the current time zone as the template showed it.
        updated_title=f"{updated.year:04d}-{updated:%m-%d %H:%M:%S}",
        ago=timesince(p.updated_at, render.now),
    )
