"""Receiving Gatehouse's decision callbacks: Standard Webhooks verification and the event.

    event = parse_decision_event(secret, request.headers, request.body)   # raises if forged
    if event.type == "proposal.approved": ...

A callback carries `webhook-id` (the same on every retry: use it to apply each event once),
`webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`,
several space-separated during a secret rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gatehouse_client.errors import GatehouseError
from gatehouse_client.models import Proposal

DEFAULT_TOLERANCE = 5 * 60  # seconds a timestamp may be off, either way (replay window)


class WebhookVerificationError(GatehouseError):
    """The callback is not authentic, is too old or too new, or is not a decision event."""


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing header {name!r}")


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not a base64 whsec_… secret") from None


def verify_webhook(
    secret: str | list[str],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str:
    """Check a callback's signature and timestamp; return its `webhook-id`.

    `secret` may be a list during a rotation (any one matching suffices). `body` must be the raw
    bytes as received: re-encoded JSON would not match.
    """
    raw = body.encode() if isinstance(body, str) else body
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance window")
    signed = f"{msg_id}.{timestamp}.".encode() + raw
    secrets = [secret] if isinstance(secret, str) else secret
    expected = [
        base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()) for s in secrets
    ]
    for candidate in signatures.split():
        version, _, sig = candidate.partition(",")
        if version != "v1":
            continue
        if any(hmac.compare_digest(sig.encode(), e) for e in expected):
            return msg_id
    raise WebhookVerificationError("no signature matches")


@dataclass(frozen=True)
class DecisionEvent:
    """`proposal.approved` / `rejected` / `expired` / `cancelled` / `executed` / `failed`."""

    id: str  # the webhook-id: apply each one once
    type: str
    timestamp: str | None
    proposal: Proposal
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def parse_decision_event(
    secret: str | list[str],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> DecisionEvent:
    """Verify a decision callback and read it. Raises WebhookVerificationError on anything off."""
    msg_id = verify_webhook(secret, headers, body, tolerance=tolerance, now=now)
    try:
        data = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise WebhookVerificationError("not a decision event: no `data` object")
    kind = data.get("type")
    if not isinstance(kind, str) or not kind.startswith("proposal."):
        raise WebhookVerificationError(f"not a decision event: type {kind!r}")
    try:
        proposal = Proposal.from_json(data["data"])
    except (KeyError, TypeError, ValueError):
        raise WebhookVerificationError("the event's proposal is malformed") from None
    return DecisionEvent(
        id=msg_id, type=kind, timestamp=data.get("timestamp"), proposal=proposal, raw=data
    )
