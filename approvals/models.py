from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone

from foundation import ids


class Risk(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ExecutorKind(models.TextChoices):
    WEBHOOK = "webhook"
    CALLABLE = "callable"
    NONE = "none"


class ActionType(models.Model):
    """A kind of action a model may propose, with the JSON Schema its payload must match."""

    key = models.CharField(
        max_length=100, unique=True, help_text="Dotted name such as refund.issue"
    )
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    payload_schema = models.JSONField(default=dict, help_text="JSON Schema of the payload")
    irreversible = models.BooleanField(default=False)
    risk = models.CharField(max_length=10, choices=Risk.choices, default=Risk.MEDIUM)
    approvals_required = models.PositiveSmallIntegerField(
        default=1, choices=[(1, "1"), (2, "2 (four-eyes)")]
    )
    review_ttl = models.DurationField(default=timedelta(hours=24))
    executor_kind = models.CharField(
        max_length=10, choices=ExecutorKind.choices, default=ExecutorKind.NONE
    )
    executor_target = models.CharField(
        max_length=500, blank=True, help_text="Webhook URL or dotted path of a callable"
    )
    reviewer_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="action_types"
    )
    review_sla = models.DurationField(
        null=True,
        blank=True,
        help_text="How soon a reviewer should decide: a reminder at 80%, escalation when breached",
    )
    escalation_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="escalated_action_types",
        help_text="Notified when a proposal breaches the review SLA",
    )
    redacted_fields = models.JSONField(
        default=list,
        blank=True,
        help_text='Payload fields never sent outside Gatehouse (Slack), e.g. ["iban", "customer.email"]',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class Service(models.Model):
    """A calling system that proposes actions through the API."""

    name = models.CharField(max_length=100, unique=True)
    action_types = models.ManyToManyField(ActionType, blank=True, related_name="services")
    callback_url = models.URLField(max_length=500, blank=True)
    webhook_secret = models.CharField(max_length=100, help_text="whsec_… used to sign callbacks")
    previous_webhook_secret = models.CharField(
        max_length=100, blank=True, help_text="Also signs during a rotation; clear it when done"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """`gh_<prefix>_<secret>`; only a SHA-256 of the secret is stored."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"gh_{self.prefix}_…"

    @staticmethod
    def hash_secret(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


# The states a decided proposal can be in: what history shows.
DECIDED = [
    "approved",
    "rejected",
    "cancelled",
    "expired",
    "executing",
    "executed",
    "failed",
]


# What insights reads of a reviewer's verdict: the type and time it is looked up by, then every
# column it shows (insights.selectors.verdicts; the indexes proposal_verdicts_*).
VERDICT_COLUMNS = (
    "action_type",
    "created_at",
    "model",
    "prompt_version",
    "confidence",
    "decision_outcome",
    "id",
)


class Proposal(models.Model):
    """One proposed action and where it is in its life.

    received → (rules) → approved | rejected | pending_review
    pending_review → (reviewer) approved | rejected; (service) cancelled; (time) expired
    approved → executing → executed | failed
    Every move is a compare-and-set on `state` (see approvals/statemachine.py) with its AuditEvent.
    """

    class State(models.TextChoices):
        RECEIVED = "received"
        PENDING_REVIEW = "pending_review"
        APPROVED = "approved"
        REJECTED = "rejected"
        CANCELLED = "cancelled"
        EXPIRED = "expired"
        EXECUTING = "executing"
        EXECUTED = "executed"
        FAILED = "failed"

    class Outcome(models.TextChoices):
        APPROVE = "approve"
        REVIEW = "review"
        REJECT = "reject"

    class DecidedBy(models.TextChoices):
        RULE = "rule"
        REVIEWER = "reviewer"
        POLICY = "policy"

    # Time-ordered (foundation.ids): new proposals share the index pages of their moment.
    id = models.UUIDField(primary_key=True, default=ids.uuid7, editable=False)
    # Indexed by proposal_service_created and proposal_outcome_decided, which lead with it.
    service = models.ForeignKey(
        Service, on_delete=models.PROTECT, related_name="proposals", db_index=False
    )
    # Indexed by proposal_type_versions, which leads with it.
    action_type = models.ForeignKey(
        ActionType, on_delete=models.PROTECT, related_name="proposals", db_index=False
    )
    payload = models.JSONField()
    payload_hash = models.CharField(max_length=64)
    final_payload = models.JSONField(null=True, blank=True, help_text="The reviewer's edit, if any")
    confidence = models.FloatField()
    summary = models.CharField(max_length=200)
    rationale = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True)
    prompt_version = models.CharField(max_length=200, blank=True)
    feature = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    llm_call_id = models.UUIDField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL means no key; unique only when set
    request_hash = models.CharField(max_length=64, blank=True)
    first_response = models.JSONField(null=True, blank=True, editable=False)

    state = models.CharField(max_length=20, choices=State.choices, default=State.RECEIVED)
    decision_outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True)
    decided_by = models.CharField(max_length=10, choices=DecidedBy.choices, blank=True)
    decision_rule = models.CharField(max_length=200, blank=True)
    decision_rule_version = models.PositiveIntegerField(null=True, blank=True)
    decision_reviewer = models.ForeignKey(  # indexed where set: proposal_decision_reviewer
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    decision_reason = models.TextField(blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    rule_trace = models.JSONField(default=list, blank=True)
    required_approvals = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Raised above the type's when a reviewer's edit asked for more",
    )

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Review SLA (ActionType.review_sla): when a decision is due, and the marks the SLA check
    # (services.proposals_check_sla) sets once each, by compare-and-set, with an audit event.
    review_due_at = models.DateTimeField(null=True, blank=True)
    sla_reminded_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    expiry_extended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="proposal_unique_idempotency_key",
            ),
            models.CheckConstraint(
                condition=models.Q(confidence__gte=0) & models.Q(confidence__lte=1),
                name="proposal_confidence_0_1",
            ),
        ]
        indexes = [
            # History filtered by state, latest change first (selectors.history_for_reviewer).
            models.Index(fields=["state", "updated_at", "id"], name="proposal_state_updated"),
            models.Index(fields=["service", "created_at", "id"], name="proposal_service_created"),
            # Velocity (approvals/velocity.py): decided proposals of a service and type by
            # outcome and time, the only way a plan made without the values can read them
            # (migration 0019).
            models.Index(
                fields=["service", "action_type", "decision_outcome", "decided_at"],
                condition=models.Q(decided_at__isnull=False),
                name="proposal_outcome_decided",
            ),
            # History pages on (updated_at, id), latest change first.
            models.Index(fields=["updated_at", "id"], name="proposal_updated"),
            # History by action type or by who decided, decided rows only: walking
            # proposal_updated for them passes every newer pending row and every newer row of
            # the other types first (on a million proposals with 100,000 pending and a day of
            # 100,000 rule approvals of one type: 400 ms; see bench/README.md, growth.py).
            models.Index(
                fields=["action_type", "updated_at", "id"],
                condition=models.Q(state__in=DECIDED),
                name="proposal_history_type",
            ),
            models.Index(
                fields=["decided_by", "updated_at", "id"],
                condition=models.Q(state__in=DECIDED),
                name="proposal_history_by",
            ),
            # Only decided proposals have a reviewer: a new proposal adds no entry here.
            models.Index(
                fields=["decision_reviewer"],
                condition=models.Q(decision_reviewer__isnull=False),
                name="proposal_decision_reviewer",
            ),
            # History ?mine=1: the only decided proposals a reviewer can have reviewed
            # (selectors.REVIEWABLE), latest change first, so that the walk skips the rows rules
            # decided (on a million proposals: 1,844 ms walking proposal_updated).
            models.Index(
                fields=["updated_at", "id"],
                condition=models.Q(decided_by="reviewer")
                | models.Q(state__in=["cancelled", "expired"]),
                name="proposal_reviewed_updated",
            ),
            # History ?q= matches external_id exactly (the summary by trigram, PostgreSQL only:
            # proposal_summary_trgm in migration 0014).
            models.Index(
                fields=["external_id"],
                condition=~models.Q(external_id=""),
                name="proposal_external_id",
            ),
            # The queue's default order (selectors.queue_for_reviewer), pending rows only. With
            # rows in time order the planner could misjudge a (state, created_at) index against the
            # plain created_at index and walk past every decided row (measured on a database of a
            # million proposals: 2,269 ms; 0.28 ms with this index). One column, as the plain
            # index has: a (created_at, id) one was priced above it once pending rows piled up
            # (230,000 of 1.33 million: 567 ms; migration 0020).
            models.Index(
                fields=["created_at"],
                condition=models.Q(state="pending_review"),
                name="proposal_pending_arrival",
            ),
            # The queue due first (selectors.queue_for_reviewer, order=due): pending rows by their
            # due time (the review SLA's deadline, else the expiry, else the arrival).
            models.Index(
                Coalesce("review_due_at", "expires_at", "created_at"),
                "id",
                condition=models.Q(state="pending_review"),
                name="proposal_pending_due",
            ),
            # The first time each model and prompt version was seen, per type: insights' version
            # markers read it by a loose index scan (insights/selectors._first_seen).
            models.Index(
                fields=["action_type", "model", "prompt_version", "created_at"],
                name="proposal_type_versions",
            ),
            # Reviewer verdicts of a type over a period (insights.selectors.verdicts): only
            # reviewer-decided rows, with every column the verdict reads, so that the read is
            # index-only, one index for those approved as proposed or rejected and one for the
            # edited (an edit is `final_payload IS NOT NULL`, a column no index can carry).
            # Reading the heap, the planner misjudged the busiest type (a day of rule approvals
            # in the period) and walked the plain created_at index past 189,000 rows (131 ms).
            models.Index(
                fields=[*VERDICT_COLUMNS],
                condition=models.Q(decided_by="reviewer", final_payload__isnull=True),
                name="proposal_verdicts_unedited",
            ),
            models.Index(
                fields=[*VERDICT_COLUMNS],
                condition=models.Q(decided_by="reviewer", final_payload__isnull=False),
                name="proposal_verdicts_edited",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action_type_id}:{self.summary[:50]}"

    @property
    def effective_payload(self) -> Any:
        return self.final_payload if self.final_payload is not None else self.payload

    @property
    def is_decided(self) -> bool:
        return self.state not in {self.State.RECEIVED, self.State.PENDING_REVIEW}

    @property
    def effective_payload_hash(self) -> str:
        """The hash a reviewer's approval is bound to: of the edit if there is one."""
        if self.final_payload is None:
            return self.payload_hash
        return payload_hash(self.final_payload)

    @property
    def approvals_needed(self) -> int:
        return max(self.action_type.approvals_required, self.required_approvals or 1)

    @property
    def live_claim(self) -> Claim | None:
        try:
            claim = self.claim
        except ObjectDoesNotExist:
            return None
        return claim if claim.is_live() else None

    @property
    def current_approvals(self) -> list[Review]:
        """Approvals bound to the payload as it stands (an edit voids earlier ones)."""
        current = self.effective_payload_hash
        return [
            r
            for r in self.reviews.all()
            if r.verdict == Review.Verdict.APPROVE and r.payload_hash == current
        ]

    @property
    def raised_by(self) -> str:
        """Who the service says asked for this action (metadata.requested_by), if anyone."""
        value = (
            (self.metadata or {}).get("requested_by") if isinstance(self.metadata, dict) else None
        )
        return value.strip().lower() if isinstance(value, str) else ""


def payload_hash(payload: Any) -> str:
    """A stable hash of a JSON value (sorted keys, no whitespace)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Review(models.Model):
    class Verdict(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    proposal = models.ForeignKey(Proposal, on_delete=models.PROTECT, related_name="reviews")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews"
    )
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    edited_payload = models.JSONField(null=True, blank=True)
    payload_hash = models.CharField(max_length=64, help_text="Hash of the payload the reviewer saw")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["proposal", "reviewer"], name="review_once_per_reviewer"
            )
        ]

    def __str__(self) -> str:
        return f"{self.verdict} by {self.reviewer_id} on {self.proposal_id}"


class AuditEvent(models.Model):
    """Append-only. On PostgreSQL, triggers refuse UPDATE, DELETE and TRUNCATE."""

    proposal = models.ForeignKey(
        Proposal,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="events",
        db_constraint=True,
        db_index=False,  # audit_proposal (proposal, id) serves every lookup by proposal
    )
    kind = models.CharField(max_length=60)
    from_state = models.CharField(max_length=20, blank=True)
    to_state = models.CharField(max_length=20, blank=True)
    actor = models.CharField(max_length=200, help_text="service:NAME, user:NAME, rule:NAME, system")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["proposal", "id"], name="audit_proposal")]

    def __str__(self) -> str:
        return f"{self.kind} {self.from_state}→{self.to_state} by {self.actor}"


class Claim(models.Model):
    """A reviewer's lease on a pending proposal: others see who holds it until it expires."""

    proposal = models.OneToOneField(
        Proposal, on_delete=models.CASCADE, primary_key=True, related_name="claim"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="claims"
    )
    claimed_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.proposal_id} held by {self.reviewer_id} until {self.expires_at:%H:%M:%S}"

    def is_live(self, now: Any = None) -> bool:
        return self.expires_at > (now or timezone.now())


class Rule(models.Model):
    """A deterministic check on new proposals, written in CEL. Edits go through
    services.rule_save, which records each one as a new immutable RuleVersion."""

    class Mode(models.TextChoices):
        ENFORCE = "enforce"
        SHADOW = "shadow"

    name = models.CharField(
        max_length=200, unique=True, help_text="Unique; shown in traces and decisions"
    )
    description = models.TextField(blank=True)
    priority = models.IntegerField(default=100, help_text="Lower runs first")
    action_type = models.ForeignKey(
        ActionType,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rules",
        help_text="Empty: every action type",
    )
    when = models.TextField(help_text="A CEL condition; see docs/rules.md for the variables")
    outcome = models.CharField(max_length=10, choices=Proposal.Outcome.choices)
    reason = models.CharField(
        max_length=500, blank=True, help_text="Shown to reviewers and returned to the service"
    )
    allows_irreversible = models.BooleanField(
        default=False, help_text="Only such a rule may approve an irreversible action type"
    )
    approvals_required = models.PositiveSmallIntegerField(
        default=1,
        choices=[(1, "as the action type asks"), (2, "2 (four-eyes)")],
        help_text="For a review outcome: how many different reviewers must approve "
        "(never fewer than the action type asks)",
    )
    mode = models.CharField(
        max_length=10,
        choices=Mode.choices,
        default=Mode.ENFORCE,
        help_text="Shadow: evaluated and traced, never decides",
    )
    enabled = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def approvals_fit_outcome(approvals_required: int, outcome: str) -> bool:
        """More than one approval only means something where reviewers decide: review."""
        return approvals_required <= 1 or outcome == Proposal.Outcome.REVIEW


class RuleVersion(models.Model):
    """One immutable state of a rule: its definition as saved, a snapshot of every attribute
    (approvals/ruledef.py), so that a new attribute needs no column here; read it with
    RuleDefinition.from_snapshot, which loads old shapes too. On PostgreSQL the table refuses
    UPDATE and DELETE."""

    rule = models.ForeignKey(Rule, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    snapshot = models.JSONField(help_text="RuleDefinition.snapshot(): the rule's attributes")
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["rule", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "version"], name="rule_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.snapshot.get('name', self.rule_id)} v{self.version}"


class OutboxMessage(models.Model):
    """Work that follows a committed change: run the executor, call the service back, or send
    another app's webhook (an insights alert).

    Written in the same transaction as the change, so it exists exactly when the change does.
    pending → delivered | failed. A worker takes a message by a compare-and-set lease
    (`locked_until`); the webhook id is fixed at creation and reused on every retry, so the
    receiver can deduplicate. The reconciler re-dispatches pending messages nobody holds.
    Executions and callbacks belong to a proposal; a `webhook` belongs to none, and its signing
    secret is found at send time through `outbox.WEBHOOK_SECRETS` (never stored here).
    """

    class Kind(models.TextChoices):
        EXECUTE = "execute"
        CALLBACK = "callback"
        WEBHOOK = "webhook", "webhook (no proposal)"

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    proposal = models.ForeignKey(
        Proposal, on_delete=models.PROTECT, related_name="outbox", null=True, blank=True
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    event = models.CharField(
        max_length=40, help_text="proposal.execute, proposal.<state>, or <app>.<event>"
    )
    webhook_id = models.CharField(max_length=100, unique=True)
    target = models.CharField(max_length=500, help_text="URL or dotted path, fixed at creation")
    body = models.JSONField(help_text="What is sent, fixed at creation")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(
        null=True, blank=True, help_text="Attempts before giving up; empty: EXECUTION_MAX_ATTEMPTS"
    )
    next_attempt_at = models.DateTimeField(default=timezone.now)
    locked_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # W3C trace context (traceparent, tracestate) of the transaction that wrote the row, so the
    # worker's spans join the trace of the request that decided; empty when tracing is off.
    trace_context = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["proposal", "kind", "event"], name="outbox_once_per_proposal_event"
            ),
            # Executions and callbacks name their proposal; only another app's webhook has none.
            models.CheckConstraint(
                condition=models.Q(kind="webhook", proposal__isnull=True)
                | (~models.Q(kind="webhook") & models.Q(proposal__isnull=False)),
                name="outbox_proposal_unless_webhook",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="outbox_pending_due",
            )
        ]

    def __str__(self) -> str:
        subject = self.proposal_id or self.webhook_id
        return f"{self.event} for {subject} ({self.status})"


class Attempt(models.Model):
    """One try of an outbox message: an executor run or a webhook delivery, with its outcome."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        ABANDONED = "abandoned"  # the worker died before it finished

    message = models.ForeignKey(OutboxMessage, on_delete=models.CASCADE, related_name="tries")
    # The message's proposal (empty for a webhook that has none), for a proposal's page.
    proposal = models.ForeignKey(
        Proposal, on_delete=models.PROTECT, related_name="attempts", null=True, blank=True
    )
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["proposal", "id"], name="attempt_proposal")]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.message_id}: {self.status}"


class WebhookEndpoint(models.Model):
    """A webhook or callback URL that answered 410 Gone: nothing is sent to it until re-enabled."""

    url = models.CharField(max_length=500, unique=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.url


class ApprovedSum(models.Model):
    """Per minute: the sum of one top-level numeric payload field over the approved proposals of
    a service and action type decided in that minute (the executed payload, a reviewer's edit
    included), so that `stats.approved_sum` reads whole minutes of its window here and only the
    two partial minutes at its ends from the proposals (approvals/velocity.py).

    On PostgreSQL a trigger on approvals_proposal keeps it (migration 0013), in the transaction
    that inserts, updates or deletes the proposal; elsewhere nothing writes it and velocity
    computes the sum the plain way. On PostgreSQL the unique constraint also carries `total`
    (`INCLUDE`, migration 0016) so that the window's minutes are read from the index alone.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="+", db_index=False)
    action_type = models.ForeignKey(
        ActionType, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    field = models.CharField(max_length=200)
    minute = models.DateTimeField()
    total = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["service", "action_type", "field", "minute"], name="approvedsum_minute"
            )
        ]

    def __str__(self) -> str:
        return f"{self.field} at {self.minute:%Y-%m-%d %H:%M}: {self.total}"


class ApprovedHourSum(models.Model):
    """ApprovedSum's minutes rolled up by hour, kept by the same trigger in the same statement
    (migration 0017), so that a day's window reads about 24 hours and at most 118 minutes here
    rather than 1,440 minutes: the cost of `stats.approved_sum` under a cap's lock no longer
    grows with the window. Nothing writes it outside PostgreSQL."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="+", db_index=False)
    action_type = models.ForeignKey(
        ActionType, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    field = models.CharField(max_length=200)
    hour = models.DateTimeField()
    total = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["service", "action_type", "field", "hour"], name="approvedhoursum_hour"
            )
        ]

    def __str__(self) -> str:
        return f"{self.field} at {self.hour:%Y-%m-%d %H}h: {self.total}"
