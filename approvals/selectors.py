"""Reads for the reviewer's workspace. Visibility is decided here, once: a reviewer sees only
the action types whose reviewer group they belong to (superusers see all), and never a proposal
the service says they raised. Services' reads (the REST API and MCP) are at the end."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import (
    BooleanField,
    CharField,
    ExpressionWrapper,
    Prefetch,
    Q,
    QuerySet,
    Value,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce, Concat, Upper
from django.utils import timezone

from approvals.models import ActionType, AuditEvent, Proposal, Review, Service
from foundation import cursors
from foundation.errors import NotFound

State = Proposal.State
DECIDED_STATES = [
    State.APPROVED,
    State.REJECTED,
    State.CANCELLED,
    State.EXPIRED,
    State.EXECUTING,
    State.EXECUTED,
    State.FAILED,
]
# The decided proposals that can have a review: reviews are only written on pending proposals,
# and one that is then decided is decided by a reviewer, unless it is cancelled or expires first
# (a four-eyes approval still waiting for the second). Said in the query, it lets history's
# ?mine=1 walk the partial index proposal_reviewed_updated, which holds just these rows.
REVIEWABLE = Q(decided_by=Proposal.DecidedBy.REVIEWER) | Q(
    state__in=[State.CANCELLED, State.EXPIRED]
)
# What a queue row shows (approvals/rows.py) and nothing else: each column read is one more value
# to decode and set on each of the page's 50 proposals (the timestamps and JSON most). An edit
# (final_payload) and the payload's hash tell which approvals still count on a four-eyes row.
QUEUE_ROW_FIELDS = (
    "action_type",
    "summary",
    "confidence",
    "created_at",
    "review_due_at",
    "expires_at",
    "escalated_at",
    "required_approvals",
    "payload_hash",
    "final_payload",
    "claim__expires_at",
    "claim__reviewer__username",
)
QUEUE_TYPE_FIELDS = ("key", "risk", "irreversible", "approvals_required")
AGE_CHOICES = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "24h": timedelta(hours=24)}
AnyUser = AbstractBaseUser | AnonymousUser
LLMCALLS_APP = "llmcalls"  # optional: the model-call log, when installed


def visible_action_types(*, user: AnyUser) -> QuerySet[ActionType]:
    if not isinstance(user, User) or not user.is_active:
        return ActionType.objects.none()
    if user.is_superuser:
        return ActionType.objects.all()
    return ActionType.objects.filter(reviewer_group__user=user).distinct()


def visible_action_type_ids(*, user: AnyUser) -> set[int]:
    return set(visible_action_types(user=user).values_list("pk", flat=True))


def reviewer_identities(*, user: AnyUser) -> set[str]:
    """The names under which a service may say this reviewer raised a proposal."""
    if not isinstance(user, User):
        return set()
    return {name.strip().lower() for name in (user.username, user.email) if name and name.strip()}


def _with_review_state(queryset: QuerySet[Proposal]) -> QuerySet[Proposal]:
    return queryset.select_related("action_type", "claim__reviewer").prefetch_related(
        Prefetch("reviews", queryset=Review.objects.select_related("reviewer"))
    )


def _not_raised_by(queryset: QuerySet[Proposal], identities: set[str]) -> QuerySet[Proposal]:
    if not identities:
        return queryset
    # A missing key must not exclude the row, hence the explicit isnull branch.
    return queryset.filter(
        Q(metadata__requested_by__isnull=True) | ~Q(metadata__requested_by__in=sorted(identities))
    )


# --- the queue ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFilters:
    action_type: str = ""
    risk: str = ""
    age: str = ""
    newest_first: bool = False
    due_first: bool = False  # soonest due (review SLA, else expiry) first
    after: str = ""

    @classmethod
    def from_query(cls, query: Any) -> QueueFilters:
        return cls(
            action_type=str(query.get("type", ""))[:100],
            risk=str(query.get("risk", ""))[:10],
            age=str(query.get("age", ""))[:4],
            newest_first=query.get("order") == "newest",
            due_first=query.get("order") == "due",
            after=str(query.get("after", ""))[:100],
        )

    def as_query(self, **changes: Any) -> dict[str, str]:
        values = {
            "type": self.action_type,
            "risk": self.risk,
            "age": self.age,
            "order": "newest" if self.newest_first else "due" if self.due_first else "",
            "after": self.after,
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v}


@dataclass
class Page:
    rows: list[Proposal]
    next_cursor: str = ""
    action_types: list[ActionType] = field(default_factory=list)


def _keyset(
    queryset: QuerySet[Proposal], column: str, after: str, *, descending: bool
) -> QuerySet[Proposal]:
    """Rows strictly after the cursor in (column, id) order. The plain `>=` bound lets the
    database start the index scan at the cursor; the OR settles ties on the same instant."""
    position = cursors.decode(after) if after else None
    if position is None:
        return queryset
    moment, pk = position
    if descending:
        return queryset.filter(**{f"{column}__lte": moment}).filter(
            Q(**{f"{column}__lt": moment}) | Q(**{column: moment, "id__lt": pk})
        )
    return queryset.filter(**{f"{column}__gte": moment}).filter(
        Q(**{f"{column}__gt": moment}) | Q(**{column: moment, "id__gt": pk})
    )


def queue_for_reviewer(*, user: AnyUser, filters: QueueFilters, limit: int = 50) -> Page:
    """Pending proposals this reviewer may decide, oldest first unless asked otherwise."""
    types = list(visible_action_types(user=user).only(*QUEUE_TYPE_FIELDS).order_by("key"))
    chosen = [
        t
        for t in types
        if (not filters.action_type or t.key == filters.action_type)
        and (not filters.risk or t.risk == filters.risk)
    ]
    if not chosen:
        return Page(rows=[], action_types=types)
    queryset = Proposal.objects.filter(
        state=State.PENDING_REVIEW, action_type_id__in=[t.pk for t in chosen]
    )
    if filters.age in AGE_CHOICES:
        queryset = queryset.filter(created_at__lte=timezone.now() - AGE_CHOICES[filters.age])
    queryset = _not_raised_by(queryset, reviewer_identities(user=user))
    column = "created_at"
    if filters.due_first:
        # Due is the review SLA's deadline where the type has one, else the review expiry.
        column = "due"
        queryset = queryset.annotate(due=Coalesce("review_due_at", "expires_at", "created_at"))
    queryset = _keyset(queryset, column, filters.after, descending=filters.newest_first)
    order = [f"-{column}", "-id"] if filters.newest_first else [column, "id"]
    # The action types are in hand already, so rows take them from there rather than a join.
    queryset = queryset.select_related("claim__reviewer").only(*QUEUE_ROW_FIELDS).order_by(*order)
    rows = list(queryset[: limit + 1])
    by_id = {t.pk: t for t in chosen}
    for row in rows:
        row.action_type = by_id[row.action_type_id]
    # Only rows that need several approvals show a count of them.
    prefetch_related_objects([r for r in rows if r.approvals_needed > 1], "reviews")
    next_cursor = ""
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(getattr(rows[-1], column), rows[-1].pk)
    return Page(rows=rows, next_cursor=next_cursor, action_types=types)


# --- one proposal ---------------------------------------------------------------------------


def proposal_for_reviewer(*, user: AnyUser, proposal_id: uuid.UUID) -> Proposal:
    """The proposal if this reviewer may see it; NotFound otherwise (outsiders learn nothing)."""
    proposal = (
        _with_review_state(
            Proposal.objects.filter(
                pk=proposal_id, action_type__in=visible_action_types(user=user)
            ).select_related("service", "decision_reviewer")
        )
    ).first()
    if proposal is None:
        raise NotFound("No such proposal.")
    return proposal


def proposal_for_broadcast(*, proposal_id: uuid.UUID) -> Proposal | None:
    """With what the queue row, the state panel and the history row show."""
    return (
        _with_review_state(Proposal.objects.filter(pk=proposal_id))
        .select_related("decision_reviewer")
        .first()
    )


def proposal_history(*, proposal: Proposal) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(proposal=proposal).order_by("id"))


@dataclass(frozen=True)
class ModelCall:
    id: str
    model: str
    provider: str
    status: str
    latency_ms: float | None
    cost_usd: Any
    input_tokens: int | None
    output_tokens: int | None
    messages: Any
    response_text: str


def linked_model_call(*, proposal: Proposal) -> ModelCall | None:
    """The model call the proposal came from, when the llmcalls app is installed and has it."""
    if proposal.llm_call_id is None or not apps.is_installed(LLMCALLS_APP):
        return None
    try:
        model = apps.get_model(LLMCALLS_APP, "LLMCall")
    except LookupError:
        return None
    # Only a call of the proposal's own service: never another tenant's prompt on this page.
    call = model.objects.filter(pk=proposal.llm_call_id, service=proposal.service.name).first()
    if call is None:
        return None
    return ModelCall(
        id=str(call.pk),
        model=getattr(call, "model", ""),
        provider=getattr(call, "provider", ""),
        status=getattr(call, "status", ""),
        latency_ms=getattr(call, "latency_ms", None),
        cost_usd=getattr(call, "cost_usd", None),
        input_tokens=getattr(call, "input_tokens", None),
        output_tokens=getattr(call, "output_tokens", None),
        messages=getattr(call, "messages", None),
        response_text=getattr(call, "response_text", ""),
    )


# --- history --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFilters:
    q: str = ""
    state: str = ""
    action_type: str = ""
    decided_by: str = ""
    mine: bool = False
    after: str = ""

    @classmethod
    def from_query(cls, query: Any) -> HistoryFilters:
        return cls(
            q=str(query.get("q", "")).strip()[:200],
            state=str(query.get("state", ""))[:20],
            action_type=str(query.get("type", ""))[:100],
            decided_by=str(query.get("by", ""))[:10],
            mine=query.get("mine") == "1",
            after=str(query.get("after", ""))[:100],
        )

    def as_query(self, **changes: Any) -> dict[str, str]:
        values = {
            "q": self.q,
            "state": self.state,
            "type": self.action_type,
            "by": self.decided_by,
            "mine": "1" if self.mine else "",
            "after": self.after,
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v}


def history_for_reviewer(*, user: AnyUser, filters: HistoryFilters, limit: int = 50) -> Page:
    """Decided proposals of the types this reviewer may see, latest change first."""
    types = list(visible_action_types(user=user).order_by("key"))
    queryset = Proposal.objects.filter(
        action_type_id__in=[
            t.pk for t in types if not filters.action_type or t.key == filters.action_type
        ]
    )
    order = ["-updated_at", "-id"]
    if filters.state in DECIDED_STATES:
        # One state, as a range of one value ordered by the state first: the order then is
        # proposal_state_updated's alone. Said as `state = …` the planner drops the constant
        # from the order and walks proposal_updated instead, guessing the state's rows spread
        # evenly over time, past every newer row of the other states (?state=rejected on a
        # million proposals: 116,012 rows read and discarded, 56 to 128 ms, for 51 rows).
        queryset = queryset.filter(state__gte=filters.state, state__lte=filters.state)
        order = ["-state", *order]
    else:
        queryset = queryset.filter(state__in=DECIDED_STATES)
    if filters.decided_by in Proposal.DecidedBy.values:
        queryset = queryset.filter(decided_by=filters.decided_by)
    if filters.mine:
        queryset = queryset.filter(REVIEWABLE, reviews__reviewer_id=user.pk)
    queryset = _keyset(queryset, "updated_at", filters.after, descending=True)
    ordered = queryset.select_related("action_type", "decision_reviewer").order_by(*order)
    rows: list[Proposal] | None = None
    if filters.q:
        exact = Q(external_id=filters.q)
        with contextlib.suppress(ValueError):
            exact |= Q(pk=uuid.UUID(filters.q))
        matching = Q(summary__icontains=filters.q) | exact
        columns = [name.removeprefix("-") for name in order]  # all descending
        rows = _recent_matches(ordered, columns, filters.q, exact, within=SEARCH_FIRST, limit=limit)
        if rows is None:
            rows = _rare_matches(ordered, columns, matching, limit=limit)
        if rows is None:
            rows = _recent_matches(
                ordered, columns, filters.q, exact, within=SEARCH_RECENT, limit=limit
            )
        ordered = ordered.filter(matching)
        if rows is None and connection.vendor == "postgresql":
            # Neither rare nor common: find its matches by the trigram index, then sort them.
            # The order by COALESCE(updated_at, updated_at) (the same order) keeps the planner
            # from walking proposal_updated for a word it wrongly thinks common.
            ordered = ordered.order_by(Coalesce("updated_at", "updated_at").desc(), "-id")
    if rows is None:
        rows = list(ordered[: limit + 1])
    next_cursor = ""
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(rows[-1].updated_at, rows[-1].pk)
    return Page(rows=rows, next_cursor=next_cursor, action_types=types)


# A search (PostgreSQL) reads the SEARCH_FIRST latest rows: a common word fills its page there.
# Else it asks the trigram index (proposal_summary_trgm) for at most SEARCH_RARE + 1 matches in
# no order: a rare word has them all there, sorted here. Else it reads the SEARCH_RECENT latest
# rows, and only a word rarer still but not rare has all its matches sorted. The planner cannot
# tell a common word from a rare one (it guesses ~100 matches for any word: 75,000 matches of a
# common word sorted took 3.1 s on a million proposals, a word matching nothing 6.2 s walking
# proposal_updated); a word too rare for the first read and not rare pays for the index's whole
# bitmap on the way (55 ms cold for the 75,000 matches of "damaged", 501 of them read).
SEARCH_FIRST = 1_000
SEARCH_RARE = 200
SEARCH_RECENT = 10_000


def _in_order(ordered: QuerySet[Proposal], ids: list[Any]) -> list[Proposal]:
    """The rows of `ordered` with these ids, in the ids' order."""
    found = ordered.order_by().in_bulk(ids)
    return [found[pk] for pk in ids]


def _rare_matches(
    ordered: QuerySet[Proposal], columns: list[str], matching: Q, *, limit: int
) -> list[Proposal] | None:
    """The page of matches when there are at most SEARCH_RARE of them, else None."""
    if connection.vendor != "postgresql":
        return None
    keys = list(ordered.filter(matching).order_by().values_list(*columns)[: SEARCH_RARE + 1])
    if len(keys) > SEARCH_RARE:
        return None
    keys.sort(reverse=True)  # as ORDER BY … DESC: a uuid compares as its bytes in both
    ids = [key[-1] for key in keys[: limit + 1]]
    return _in_order(ordered, ids)


def _recent_matches(
    ordered: QuerySet[Proposal], columns: list[str], q: str, exact: Q, *, within: int, limit: int
) -> list[Proposal] | None:
    """The page of matches of `q` (in the summary, any case, or `exact`) when the `within`
    latest rows of `ordered` hold a full one (exactly the page the whole search gives: every
    later row is older), else None."""
    if connection.vendor != "postgresql":
        return None
    # One walk of proposal_updated: the latest rows, then the matches among them. UPPER(summary)
    # || '' is not the indexed expression, so the trigram index is not tried here.
    unindexed = Concat(Upper("summary"), Value(""), output_field=CharField())
    latest = (
        ordered.alias(searched=unindexed)
        .annotate(
            hit=ExpressionWrapper(
                Q(searched__contains=Upper(Value(q))) | exact, output_field=BooleanField()
            )
        )
        .values_list(*columns, "hit")[:within]
    )
    try:
        sql, params = latest.query.sql_with_params()
    except EmptyResultSet:  # no action type visible, or `within` is 0: nothing to read
        return None
    by = ", ".join(f'"{name}" DESC' for name in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM ({sql}) AS latest WHERE hit "  # noqa: S608 - the ORM's own SQL
            f"ORDER BY {by} LIMIT %s",
            [*params, limit + 1],
        )
        ids = [row[0] for row in cursor.fetchall()]
    if len(ids) <= limit:
        return None
    return _in_order(ordered, ids)


# --- services (REST API and MCP) ----------------------------------------------------------------


def action_types_for_service(*, service: Service) -> QuerySet[ActionType]:
    """The action types a service may propose."""
    return ActionType.objects.filter(services=service).order_by("key")


def _proposal_detail() -> QuerySet[Proposal]:
    """What a service's read of one proposal loads (its representation needs all of it)."""
    return Proposal.objects.select_related("action_type", "decision_reviewer").prefetch_related(
        "outbox"
    )


def proposals_for_service(
    *,
    service: Service,
    state: str | None = None,
    action_type: str | None = None,
    external_id: str | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
    limit: int,
) -> tuple[list[Proposal], bool]:
    """The service's own proposals, newest first, `limit` of them after the keyset position
    `after` (created_at, id), and whether there are more."""
    queryset = _proposal_detail().filter(service=service)
    if state:
        queryset = queryset.filter(state=state)
    if action_type:
        queryset = queryset.filter(action_type__key=action_type)
    if external_id:
        queryset = queryset.filter(external_id=external_id)
    if after is not None:
        created, pk = after
        queryset = queryset.filter(Q(created_at__lt=created) | Q(created_at=created, id__lt=pk))
    rows = list(queryset.order_by("-created_at", "-id")[: limit + 1])
    return rows[:limit], len(rows) > limit


def proposal_for_service(*, service: Service, proposal_id: uuid.UUID) -> Proposal | None:
    """One of the service's own proposals (None for anyone else's)."""
    return _proposal_detail().filter(pk=proposal_id, service=service).first()


def proposals_by_id(*, proposal_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Proposal]:
    """Proposals by id, for a caller that already read each one as its service (the long
    polls' re-reads, approvals/waits.py; a proposal never changes service)."""
    return {p.pk: p for p in _proposal_detail().filter(pk__in=list(proposal_ids))}


# --- metrics (read when Prometheus scrapes; see telemetry/metrics.py) ---------------------------

MetricSamples = list[tuple[str, tuple[str, ...], float]]


def metrics_pending(*, now: datetime | None = None) -> MetricSamples:
    """Pending proposals per action type and the age of the oldest: one grouped query on the
    partial index proposal_pending_arrival (pending rows only)."""
    from django.db.models import Count, Min

    now = now or timezone.now()
    rows = (
        Proposal.objects.filter(state=State.PENDING_REVIEW)
        .values("action_type__key")
        .annotate(count=Count("id"), oldest=Min("created_at"))
        .order_by()
    )
    samples: MetricSamples = []
    for row in rows:
        key = (row["action_type__key"],)
        samples.append(("gatehouse_pending_proposals", key, row["count"]))
        age = (now - row["oldest"]).total_seconds()
        samples.append(("gatehouse_pending_oldest_age_seconds", key, max(age, 0.0)))
    return samples


def metrics_outbox(*, now: datetime | None = None) -> MetricSamples:
    """Undelivered outbox messages per kind and the age of the oldest: one grouped query over
    the partial index outbox_pending_due (pending rows only)."""
    from django.db.models import Count, Min

    from approvals.models import OutboxMessage

    now = now or timezone.now()
    rows = (
        OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING)
        .values("kind")
        .annotate(count=Count("id"), oldest=Min("created_at"))
        .order_by()
    )
    samples: MetricSamples = []
    for row in rows:
        samples.append(("gatehouse_outbox_backlog", (row["kind"],), row["count"]))
        age = (now - row["oldest"]).total_seconds()
        samples.append(("gatehouse_outbox_oldest_age_seconds", (row["kind"],), max(age, 0.0)))
    return samples


# --- archive ---------------------------------------------------------------------------------


def audit_export(*, since: datetime) -> Iterator[dict[str, Any]]:
    """Proposals created since `since`, then the audit events written since then, as plain
    dicts (every column, foreign keys as ids), streamed in chunks for `manage.py export_audit`."""
    for model, kind, order in (
        (Proposal, "proposal", ("created_at", "id")),
        (AuditEvent, "audit_event", ("id",)),
    ):
        fields = [f.attname for f in model._meta.concrete_fields]
        rows = model.objects.filter(created_at__gte=since).order_by(*order).values(*fields)
        for row in rows.iterator(chunk_size=2000):
            yield {"record": kind, **row}
