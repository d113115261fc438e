"""Slack: the Web API client, the Block Kit card of a proposal, and request signatures.

Everything a model wrote (summary, payload values) goes into `plain_text` objects, which Slack
never parses for formatting, links or mentions; what goes into `mrkdwn` is escaped.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.urls import reverse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from approvals.models import Proposal

State = Proposal.State
TEXT_LIMIT = 2900  # a section's text may hold 3000 characters
REJECT_CALLBACK = "gatehouse_reject"
REASON_BLOCK, REASON_INPUT = "reason", "reason_input"


# What a Web API call may raise: Slack's refusal (ok: false, an HTTP error) or the network's.
ERRORS = (SlackApiError, OSError)


def error_text(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error"))
    return f"{type(exc).__name__}: {exc}"


def enabled() -> bool:
    return bool(settings.SLACK_BOT_TOKEN and settings.SLACK_SIGNING_SECRET)


def client() -> WebClient:
    return WebClient(
        token=settings.SLACK_BOT_TOKEN,
        base_url=settings.SLACK_API_URL,
        timeout=int(settings.SLACK_TIMEOUT.total_seconds()),
    )


def signature_is_valid(*, body: bytes, timestamp: str | None, signature: str | None) -> bool:
    """Slack's `v0` signature over `v0:timestamp:body`, refused when older than 5 minutes."""
    if not settings.SLACK_SIGNING_SECRET or not timestamp or not signature:
        return False
    if not timestamp.isdigit():
        return False
    verifier = SignatureVerifier(settings.SLACK_SIGNING_SECRET)
    return verifier.is_valid(body=body, timestamp=timestamp, signature=signature)


def escape(text: str) -> str:
    """For mrkdwn: Slack's three control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str, limit: int = TEXT_LIMIT) -> dict[str, Any]:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return {"type": "plain_text", "text": text or " ", "emoji": False}


def _mrkdwn(text: str, limit: int = TEXT_LIMIT) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text[:limit]}


def redact(payload: Any, paths: list[str]) -> tuple[Any, int]:
    """A copy of the payload without the listed fields (dotted paths into objects), and how
    many were withheld."""
    if not isinstance(payload, dict):
        return payload, 0
    result = json.loads(json.dumps(payload))
    withheld = 0
    for path in paths:
        node: Any = result
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and parts[-1] in node:
            del node[parts[-1]]
            withheld += 1
    return result, withheld


def payload_text(proposal: Proposal) -> str:
    shown, withheld = redact(proposal.effective_payload, proposal.action_type.redacted_fields or [])
    if isinstance(shown, dict):
        lines = [f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in shown.items()]
    else:
        lines = [json.dumps(shown, ensure_ascii=False)]
    if withheld:
        lines.append(f"({withheld} field{'s' if withheld > 1 else ''} withheld from Slack)")
    return "\n".join(lines) or "(empty)"


def proposal_url(proposal_id: uuid.UUID) -> str:
    return settings.SITE_URL + reverse("approvals:proposal", args=[proposal_id])


def button_value(proposal: Proposal) -> str:
    """What a button carries back: the proposal and the payload hash the card shows."""
    return json.dumps({"p": str(proposal.pk), "h": proposal.effective_payload_hash})


def proposal_blocks(proposal: Proposal, status: str, *, heading: str = "") -> list[dict[str, Any]]:
    action_type = proposal.action_type
    requested_by = proposal.raised_by[:200]
    proposer = proposal.service.name + (f" for {requested_by}" if requested_by else "")
    fields = [
        _mrkdwn(f"*Action*\n`{escape(action_type.key)}` {escape(action_type.title)}"),
        _mrkdwn(
            f"*Risk*\n{escape(action_type.risk)}{' · irreversible' if action_type.irreversible else ''}"
        ),
        _mrkdwn(f"*The model claims*\n{proposal.confidence:.0%} confidence"),
        _mrkdwn(f"*Proposed by*\n{escape(proposer)}"),
    ]
    blocks: list[dict[str, Any]] = []
    if heading:
        blocks.append({"type": "section", "text": _mrkdwn(heading)})
    blocks += [
        {"type": "header", "text": _plain(f"Review: {action_type.title}", 150)},
        {"type": "section", "text": _plain(proposal.summary)},
        {"type": "section", "fields": fields},
        {"type": "section", "text": _plain(payload_text(proposal))},
        {"type": "context", "elements": [_mrkdwn(status)]},
    ]
    buttons: list[dict[str, Any]] = []
    if proposal.state == State.PENDING_REVIEW:
        value = button_value(proposal)
        buttons += [
            {
                "type": "button",
                "action_id": "approve",
                "text": _plain("Approve"),
                "style": "primary",
                "value": value,
            },
            {
                "type": "button",
                "action_id": "reject",
                "text": _plain("Reject"),
                "style": "danger",
                "value": value,
            },
        ]
    buttons.append(
        {
            "type": "button",
            "action_id": "open",
            "text": _plain("Open"),
            "url": proposal_url(proposal.pk),
        }
    )
    blocks.append({"type": "actions", "block_id": f"proposal:{proposal.pk}", "elements": buttons})
    return blocks


def fallback_text(proposal: Proposal, status: str) -> str:
    """The notification text (and what clients without blocks show): no formatting, escaped."""
    return escape(f"{proposal.action_type.key}: {proposal.summary[:150]} — ") + status


def reject_modal(*, proposal: Proposal, payload_hash: str, channel: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": REJECT_CALLBACK,
        "notify_on_close": True,
        "private_metadata": json.dumps({"p": str(proposal.pk), "h": payload_hash, "c": channel}),
        "title": _plain("Reject proposal", 24),
        "submit": _plain("Reject"),
        "close": _plain("Cancel"),
        "blocks": [
            {"type": "section", "text": _plain(proposal.summary)},
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": _plain("Reason (the service is told)"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": 2000,
                },
            },
        ],
    }
