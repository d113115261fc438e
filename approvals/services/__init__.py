"""Business operations. Views, the API, the admin, commands, tasks and tests all call these.

One module per area, each importing only what lies beneath it (the state machine, the rules
engine, the outbox, the models), never another entry point:
- access: services, their API keys and webhook secrets; reviewer accounts;
- proposals: submit (with the automatic decision), cancel, report a result;
- reviews: claims, verdicts, expiry extensions, comments, review SLAs;
- rules: saving a rule as a new version.

Callers use `from approvals import services` and `services.<operation>(...)`: the public
operations of every area are exported here.
"""

from __future__ import annotations

from approvals.services.access import (
    SERVICE_GRANTS,
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    password_check,
    reviewer_create,
    service_create,
    service_webhook_rotation_finish,
    service_webhook_secret_rotate,
    webhook_secret_generate,
)
from approvals.services.proposals import (
    SubmitResult,
    proposal_cancel,
    proposal_report_result,
    proposal_submit,
)
from approvals.services.reviews import (
    SLA_REMINDER_AT,
    ClaimResult,
    claim_acquire,
    claim_release,
    proposal_comment,
    proposal_decide,
    proposal_extend_expiry,
    proposals_check_sla,
)
from approvals.services.rules import rule_save

__all__ = [
    "SERVICE_GRANTS",
    "SLA_REMINDER_AT",
    "ClaimResult",
    "SubmitResult",
    "api_key_authenticate",
    "api_key_create",
    "api_key_revoke",
    "claim_acquire",
    "claim_release",
    "password_check",
    "proposal_cancel",
    "proposal_comment",
    "proposal_decide",
    "proposal_extend_expiry",
    "proposal_report_result",
    "proposal_submit",
    "proposals_check_sla",
    "reviewer_create",
    "rule_save",
    "service_create",
    "service_webhook_rotation_finish",
    "service_webhook_secret_rotate",
    "webhook_secret_generate",
]
