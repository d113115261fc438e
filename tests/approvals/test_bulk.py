"""The one-statement insert of a proposal and its audit events."""

from __future__ import annotations

import re
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import AutoField, Field, Model, signals
from django.db.models.sql import InsertQuery
from django.db.models.sql.compiler import SQLInsertCompiler
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.safestring import SafeString
from psycopg import pq
from psycopg.types.json import Jsonb
from psycopg.types.numeric import Int2, Int4

from approvals import bulk, rules
from approvals.models import ActionType, AuditEvent, Proposal, Rule
from config.env import database_from_url
from tests.conftest import ServiceClient, refund_body


def fresh_sql(row: Model) -> tuple[str, tuple[object, ...]]:
    model = type(row)
    fields = [
        f for f in model._meta.concrete_fields if not (f.primary_key and isinstance(f, AutoField))
    ]
    query = InsertQuery(model)
    query.insert_values(fields, [row])
    [(sql, params)] = query.get_compiler(connection=connection).as_sql()
    return sql, tuple(params)


def as_sent(params: tuple[object, ...]) -> list[tuple[type, object]]:
    """Each value with its type; a JSON wrapper by what it wraps (its encoder may differ)."""
    return [(type(p), p.obj if isinstance(p, Jsonb) else p) for p in params]


def test_the_cached_insert_prepares_values_as_the_compiler_does(shop: ServiceClient) -> None:
    bulk.insert_sql([AuditEvent(kind="a", actor="x", data={"n": 1, "s": "<b>"})])  # compiled
    for again in (
        AuditEvent(kind="c", actor="z", from_state="received", data={"k": None}),
        AuditEvent(kind="d", actor="w", data=[1, 2]),
    ):
        cached_sql, cached_params = bulk.insert_sql([again])
        sql, params = fresh_sql(again)
        assert cached_sql == sql
        assert [str(p) for p in cached_params] == [str(p) for p in params]


def test_values_that_skip_django_s_preparation_are_what_it_would_give(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    now = timezone.now()
    common = {"service": shop.service, "action_type": refund_type, "payload_hash": "h"}
    for row in (
        Proposal(id=uuid.uuid4(), payload={"a": [1, "x"]}, confidence=0.5, summary="s", **common),
        Proposal(  # values of other types than the column's own go the compiler's way
            id=uuid.uuid4(),
            payload=[],
            confidence=1,  # an int in a FloatField: float(1)
            summary=SafeString("<b>s</b>"),  # a str subclass
            decision_rule_version=3,
            required_approvals=2,
            llm_call_id=uuid.uuid4(),
            metadata={"k": None},
            idempotency_key="k",
            decided_at=now,
            expires_at=now,
            **common,
        ),
    ):
        cached_sql, cached_params = bulk.insert_sql([row])
        sql, params = fresh_sql(row)
        assert cached_sql == sql
        assert as_sent(cached_params) == as_sent(params)


def test_integers_and_decimals_skip_the_compiler_and_are_what_it_would_give(
    shop: ServiceClient, refund_type: ActionType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmcalls.models import LLMCall

    common = {"feature": "f", "status": "ok", "messages": [], "attempt_log": []}
    bulk.insert_sql([LLMCall(**common)])  # compiled
    plain = LLMCall(
        attempts=2, input_tokens=10, output_tokens=0, cost_usd=Decimal("0.00012"), **common
    )
    odd = LLMCall(  # other types than the column's own go the compiler's way
        attempts=True, input_tokens=7.0, cost_usd=1.5, cache_saved_usd="0.1", **common
    )
    for row in (plain, odd):
        cached_sql, cached_params = bulk.insert_sql([row])
        sql, params = fresh_sql(row)
        assert cached_sql == sql
        assert as_sent(cached_params) == as_sent(params)
    assert {type(p) for p in bulk.insert_sql([plain])[1]} >= {Int2, Int4, Decimal}
    # A non-finite decimal is refused as the compiler refuses it.
    with pytest.raises(ValidationError):
        bulk.insert_sql([LLMCall(cost_usd=Decimal("NaN"), **common)])
    # The plain ones do not go through the compiler's preparation at all.
    prepared: list[str] = []

    def spy(self: Field[Any, Any], value: Any, connection: Any) -> Any:
        prepared.append(self.name)
        return original(self, value, connection)

    original = Field.get_db_prep_save
    monkeypatch.setattr(Field, "get_db_prep_save", spy)
    bulk.insert_sql([plain])
    assert not {"attempts", "input_tokens", "cost_usd"} & set(prepared), prepared


def test_a_proposal_and_its_events_land_together(shop: ServiceClient) -> None:
    response = shop.post_json(
        "/api/v1/proposals",
        {
            "action_type": "refund.issue",
            "payload": {"order_id": "ORD-7", "amount": 5},
            "confidence": 0.5,
            "summary": "s",
        },
    )
    proposal = Proposal.objects.get(pk=uuid.UUID(response.json()["id"]))
    assert proposal.payload == {"order_id": "ORD-7", "amount": 5}
    assert list(proposal.events.values_list("kind", flat=True)) == [
        "proposal.received",
        "proposal.routed",
    ]


class LibpqTrace:
    """What this thread's connection sends to PostgreSQL, from libpq's own protocol trace."""

    def __enter__(self) -> LibpqTrace:
        connection.ensure_connection()
        self._file = tempfile.TemporaryFile()
        self._pgconn = connection.connection.pgconn
        self._pgconn.trace(self._file.fileno())
        self._pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        return self

    def __exit__(self, *exc: object) -> None:
        self._pgconn.untrace()
        self._file.seek(0)
        # Simple queries ("Query"), the extended protocol's "Parse" (statement name, SQL) of
        # a statement run once, and "Bind" (portal, statement name) of one prepared earlier on
        # this connection, named by psycopg (its SQL from psycopg's own list of them).
        prepared = {
            name.decode(): query.decode()
            for (query, _types), name in connection.connection._prepared._names.items()
        }
        self.sent = []
        self.parsed: list[str] = []
        # What the client waits for: a simple query, or the Sync that ends an extended one.
        self.round_trips = 0
        for line in self._file.read().decode(errors="replace").splitlines():
            direction, _length, message, *rest = [*line.split("\t"), "", ""]
            if direction == "F" and message in {"Query", "Sync"}:
                self.round_trips += 1
            if direction == "F" and message == "Query":
                self.sent.append(rest[0].strip(' "'))
            elif direction == "F" and message == "Parse":
                name, sql = rest[0].strip().split('" "', 1)
                sql = re.sub(r'"(?: \d+)*$', "", sql)  # the closing quote, the parameter types
                self.parsed.append(sql)
                if name.strip('"'):
                    prepared[name.strip('"')] = sql
                else:
                    self.sent.append(sql)
            elif direction == "F" and message == "Bind":
                name = rest[0].strip().split(" ")[1].strip('"')
                if name:
                    self.sent.append(prepared[name])
        self._file.close()

    def statements(self) -> list[str]:
        return [s.split(" ", 1)[0] for s in self.sent]


def submit(shop: ServiceClient, amount: float, **headers: str) -> uuid.UUID:
    body = refund_body(payload={"order_id": "ORD-7", "amount": amount, "currency": "EUR"})
    response = shop.post_json("/api/v1/proposals", body, **headers)
    assert response.status_code == 201, response.content
    return uuid.UUID(response.json()["id"])


def warm(shop: ServiceClient, **headers: str) -> None:
    """Submit once (the key, the type and the rules cached; the submit's statement prepared on
    this connection), then wait for this process's rules listener, so that the submits a test
    traces ask the database nothing about rules (until it listens, each one checks)."""
    submit(shop, 1.0, **headers)
    deadline = time.monotonic() + 10
    while not rules._listener.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rules._listener.connected, "the rules listener did not connect"
    rules.current_ruleset()  # told of "anything may have changed" on connecting: reload once
    assert rules._listener.fresh()


@pytest.mark.django_db(transaction=True)
def test_a_proposal_for_review_is_one_statement_without_begin_or_commit(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    make_rule("big", action_type=refund_type, when="payload.amount > 1000.0", outcome="reject")
    warm(shop)  # only the submit itself is traced
    with LibpqTrace() as trace:
        proposal_id = submit(shop, 5.0)
    assert trace.statements() == ["WITH"], trace.sent  # the proposal and its audit events
    proposal = Proposal.objects.get(pk=proposal_id)
    assert proposal.state == "pending_review"
    assert list(proposal.events.values_list("kind", flat=True)) == [
        "proposal.received",
        "proposal.routed",
    ]


@pytest.mark.django_db(transaction=True)
def test_the_submit_s_statement_is_parsed_and_planned_once_per_connection(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    make_rule("big", action_type=refund_type, when="payload.amount > 1000.0", outcome="reject")
    warm(shop)  # the first on this connection prepares it (Parse with a name)
    with LibpqTrace() as trace:
        ids = [submit(shop, amount) for amount in (5.0, 6.0)]
    # Each binds the values to the statement prepared before: no SQL sent, nothing parsed.
    assert trace.parsed == [], trace.parsed
    assert trace.statements() == ["WITH", "WITH"], trace.sent
    for proposal in Proposal.objects.filter(pk__in=ids):
        assert proposal.state == "pending_review"
        assert list(proposal.events.values_list("kind", flat=True)) == [
            "proposal.received",
            "proposal.routed",
        ]
    assert sorted(p.payload["amount"] for p in Proposal.objects.filter(pk__in=ids)) == [5.0, 6.0]


def test_django_s_query_log_shows_a_prepared_submit_s_sql(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    """psycopg keeps no query text for a statement it runs as prepared; the log (DEBUG,
    assertNumQueries, CaptureQueriesContext) still shows what was sent, not None."""
    submit(shop, 1.0)  # prepared on this connection from now on
    with CaptureQueriesContext(connection) as queries:
        submit(shop, 2.0)
    inserts = [q["sql"] for q in queries if "INSERT INTO" in (q["sql"] or "")]
    assert [sql.split(" ", 1)[0] for sql in inserts] == ["WITH"], [q["sql"] for q in queries]
    assert '"approvals_proposal"' in inserts[0] and "%s" in inserts[0]


def test_prepared_statements_are_on_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgres://u@db.example/gatehouse"
    monkeypatch.delenv("DB_PREPARED_STATEMENTS", raising=False)
    options = database_from_url("DATABASE_URL", url, base_dir=None, pool=True)["OPTIONS"]
    assert options["prepare_threshold"] == 0  # on first use (server-bound statements only)
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "0")
    options = database_from_url("DATABASE_URL", url, base_dir=None, pool=True)["OPTIONS"]
    assert options["prepare_threshold"] is None  # Django's default: never


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("when", "headers", "first"),
    [
        # A velocity rule reads approvals under a lock that must last until the insert commits.
        ("stats.approved_sum('payload.amount', '24h') > 1000.0", {}, "SELECT"),
        # An approval writes its outbox rows (callback, execution) with the proposal.
        ("payload.amount < 1000.0", {}, "WITH"),
        # … and with a key, the key is looked up under its lock first, in the same transaction.
        ("payload.amount < 1000.0", {"Idempotency-Key": "k-1"}, "SELECT"),
    ],
    ids=["stats-rule", "approved", "approved-idempotency-key"],
)
def test_a_submit_that_reads_or_writes_more_keeps_its_transaction(
    shop: ServiceClient,
    make_rule: Callable[..., Rule],
    refund_type: ActionType,
    when: str,
    headers: dict[str, str],
    first: str,
) -> None:
    outcome = "approve" if "<" in when else "review"
    make_rule("r", action_type=refund_type, when=when, outcome=outcome)
    shop.service.callback_url = "https://example.com/callback"
    shop.service.save()
    warm(shop, **({"Idempotency-Key": "warm"} if headers else {}))
    with LibpqTrace() as trace:
        submit(shop, 5.0, **headers)
    statements = trace.statements()
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT", trace.sent
    assert statements[1] == first and "WITH" in statements, trace.sent


@pytest.mark.django_db(transaction=True)
def test_a_spend_cap_s_lock_is_held_for_one_round_trip(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    cap = "stats.approved_sum('payload.amount', '24h') + payload.amount > 1000.0"
    make_rule("cap", action_type=refund_type, when=cap, outcome="review")
    warm(shop)
    with LibpqTrace() as trace:
        proposal_id = submit(shop, 5.0)
    # BEGIN; the lock with the sum the rule reads (two statements sent together); the proposal
    # and its events with the COMMIT: once the lock is granted, one more round trip to release.
    assert trace.statements() == ["BEGIN", "SELECT", "WITH", "COMMIT"], trace.sent
    assert "pg_advisory_xact_lock" in trace.sent[1] and "; SELECT" in trace.sent[1]
    assert trace.round_trips == 3, trace.sent
    assert Proposal.objects.get(pk=proposal_id).state == "pending_review"


def _proposal(shop: ServiceClient, action_type: ActionType, **fields: Any) -> Proposal:
    values: dict[str, Any] = {
        "service": shop.service,
        "action_type": action_type,
        "payload": {},
        "payload_hash": "x",
        "confidence": 0.5,
        "summary": "s",
        **fields,
    }
    return bulk.new_row(Proposal, id=uuid.uuid4(), **values)


@pytest.mark.django_db(transaction=True)
def test_writes_sent_with_the_commit_are_committed_with_their_callbacks(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    ran: list[str] = []
    bulk.insert_rows([_proposal(shop, refund_type)])  # the INSERT prepared on this connection
    with LibpqTrace() as trace, transaction.atomic():
        transaction.on_commit(lambda: ran.append("committed"))
        first = _proposal(shop, refund_type)
        bulk.insert_rows([first])
        with bulk.sent_with_commit():
            second = _proposal(shop, refund_type)
            bulk.insert_rows([second])
        assert ran == []  # the callbacks wait for the atomic block's end
    assert ran == ["committed"]
    assert trace.statements() == ["BEGIN", "INSERT", "INSERT", "COMMIT"], trace.sent
    assert trace.round_trips == 3  # BEGIN, the first INSERT, the second with the COMMIT
    assert Proposal.objects.filter(pk__in=[first.pk, second.pk]).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_write_that_fails_with_the_commit_rolls_the_transaction_back(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    ran: list[str] = []
    with pytest.raises(IntegrityError), transaction.atomic():  # Django's, as elsewhere
        transaction.on_commit(lambda: ran.append("committed"))
        first = _proposal(shop, refund_type)
        bulk.insert_rows([first])
        with bulk.sent_with_commit():
            bulk.insert_rows([_proposal(shop, refund_type, confidence=2.0)])  # refused (CHECK)
    assert ran == []
    assert not Proposal.objects.filter(pk=first.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_inside_a_savepoint_the_outer_block_still_decides(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    with transaction.atomic():
        with transaction.atomic(), bulk.sent_with_commit():
            proposal = _proposal(shop, refund_type)
            bulk.insert_rows([proposal])
        transaction.set_rollback(True)
    assert not Proposal.objects.filter(pk=proposal.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_failing_insert_leaves_neither_the_proposal_nor_its_events(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    proposal = Proposal(
        service=shop.service,
        action_type=refund_type,
        payload={},
        payload_hash="x",
        confidence=2.0,  # the CHECK constraint refuses it, after the events' rows were built
        summary="s",
    )
    events = [AuditEvent(proposal=proposal, kind="proposal.received", actor="t")]
    with pytest.raises(IntegrityError):
        bulk.insert_rows([proposal], events)  # autocommit: the statement alone is atomic
    assert not Proposal.objects.exists()
    assert not AuditEvent.objects.filter(proposal_id=proposal.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_proposal_with_a_new_idempotency_key_is_one_statement_too(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    make_rule("big", action_type=refund_type, when="payload.amount > 1000.0", outcome="reject")
    warm(shop, **{"Idempotency-Key": "warm"})
    body = refund_body(payload={"order_id": "ORD-7", "amount": 5.0, "currency": "EUR"})
    with LibpqTrace() as trace:
        first = shop.post_json("/api/v1/proposals", body, **{"Idempotency-Key": "k-2"})
    # The key's lock, the check that it is new, the proposal and its events: one statement.
    assert trace.statements() == ["WITH"], trace.sent
    assert "pg_try_advisory_xact_lock" in trace.sent[0]
    assert first.status_code == 201
    proposal = Proposal.objects.get(pk=uuid.UUID(first.json()["id"]))
    assert (proposal.idempotency_key, proposal.first_response) == ("k-2", first.json())
    assert list(proposal.events.values_list("kind", flat=True)) == [
        "proposal.received",
        "proposal.routed",
    ]

    with LibpqTrace() as trace:
        replay = shop.post_json("/api/v1/proposals", body, **{"Idempotency-Key": "k-2"})
    assert trace.statements() == ["WITH", "SELECT"], trace.sent  # nothing written, then the first
    assert (replay.status_code, replay.json()) == (200, first.json())
    other = refund_body(payload={"order_id": "ORD-8", "amount": 5.0, "currency": "EUR"})
    reused = shop.post_json("/api/v1/proposals", other, **{"Idempotency-Key": "k-2"})
    assert reused.status_code == 422
    assert Proposal.objects.filter(idempotency_key="k-2").count() == 1
    assert AuditEvent.objects.filter(proposal=proposal).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_guarded_insert_writes_nothing_unless_its_guard_allows(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    def rows(**fields: object) -> tuple[list[Proposal], list[AuditEvent]]:
        proposal = Proposal(
            id=uuid.uuid4(),
            service=shop.service,
            action_type=refund_type,
            payload={"a": 1},
            payload_hash="h",
            confidence=0.5,
            **{"summary": "s", **fields},
        )
        return [proposal], [AuditEvent(proposal=proposal, kind="k", actor="t")]

    refused = rows()
    assert bulk.insert_rows_if("SELECT false AS ok, 7 AS n", (), "ok", *refused) == (
        False,
        (False, 7),
    )
    assert not Proposal.objects.exists()
    assert not AuditEvent.objects.filter(proposal_id=refused[0][0].pk).exists()
    assert refused[0][0]._state.adding

    allowed = rows(llm_call_id=None, decided_at=timezone.now(), required_approvals=2)
    assert bulk.insert_rows_if("SELECT %s AS ok", (True,), "ok", *allowed) == (True, (True,))
    stored = Proposal.objects.get()
    assert (stored.payload, stored.required_approvals) == ({"a": 1}, 2)
    assert AuditEvent.objects.filter(proposal=stored).count() == 1
    assert not allowed[0][0]._state.adding

    # Each value is cast to its column's type without the length: a long value is still refused.
    with pytest.raises(DataError):
        bulk.insert_rows_if("SELECT true AS ok", (), "ok", *rows(summary="x" * 201))
    assert Proposal.objects.count() == 1


def _fields_of(row: Model) -> dict[str, object]:
    return {f.attname: getattr(row, f.attname) for f in type(row)._meta.concrete_fields}


def _proposal_values(shop: ServiceClient, **extra: object) -> dict[str, object]:
    """A new proposal's values, as the submit gives them to new_row."""
    now = timezone.now()
    return {
        "id": uuid.uuid4(),
        "service": shop.service,
        "action_type": ActionType.objects.get(key="refund.issue"),
        "payload": {"amount": 5},
        "confidence": 0.5,
        "summary": "s",
        "created_at": now,
        "updated_at": now,
        **extra,
    }


def test_new_row_builds_what_the_constructor_builds(shop: ServiceClient) -> None:
    values = _proposal_values(shop, llm_call_id=None)
    action_type, now = values["action_type"], values["created_at"]

    built, constructed = bulk.new_row(Proposal, **values), Proposal(**values)

    assert _fields_of(built) == _fields_of(constructed)
    assert built.metadata == {} and built.metadata is not constructed.metadata  # fresh defaults
    assert built._state.adding and built._state.db is None
    with CaptureQueriesContext(connection) as queries:
        assert built.service is shop.service  # cached, as the descriptor caches it
        assert built.action_type is action_type
    assert len(queries) == 0
    event = {"proposal_id": values["id"], "kind": "proposal.received", "created_at": now}
    assert _fields_of(bulk.new_row(AuditEvent, **event)) == _fields_of(AuditEvent(**event))


def test_new_row_refuses_what_the_constructor_refuses(shop: ServiceClient) -> None:
    with pytest.raises(TypeError, match="'nonsense'"):
        bulk.new_row(AuditEvent, kind="x", nonsense=1)
    with pytest.raises(ValueError, match="service"):
        bulk.new_row(Proposal, service=ActionType.objects.get(key="refund.issue"))


def test_new_row_skips_the_constructor_unless_something_listens(
    shop: ServiceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = _proposal_values(shop, decision_rule_version=2)
    expected = _fields_of(Proposal(**values))
    constructed: list[Model] = []
    original_init = Model.__init__

    def counting_init(self: Model, *args: object, **kwargs: object) -> None:
        constructed.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(Model, "__init__", counting_init)
    built = bulk.new_row(Proposal, **values)
    assert constructed == []  # nothing listens: the row is filled in directly
    assert _fields_of(built) == expected
    assert built._state.adding and built._state.db is None
    assert built.service is shop.service

    seen: list[Model] = []

    def receiver(sender: type[Model], instance: Model, **kwargs: object) -> None:
        seen.append(instance)

    signals.post_init.connect(receiver, sender=Proposal)
    try:
        listened = bulk.new_row(Proposal, **values)
    finally:
        signals.post_init.disconnect(receiver, sender=Proposal)
    assert constructed == [listened] and seen == [listened]  # a listener: the constructor
    assert _fields_of(listened) == expected


def test_values_of_their_column_s_type_never_reach_the_compiler(
    shop: ServiceClient, refund_type: ActionType, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = timezone.now()
    proposal = Proposal(
        id=uuid.uuid4(),
        state=Proposal.State.PENDING_REVIEW,  # a choice's enum member: a str
        summary=SafeString("<b>s</b>"),
        service=shop.service,  # an integer foreign key
        action_type=refund_type,
        payload={"a": 1},
        payload_hash="h",
        confidence=0.5,
        decision_rule_version=3,  # integer columns
        required_approvals=2,
        decided_at=now,
        created_at=now,
        updated_at=now,
    )
    event = AuditEvent(proposal_id=proposal.id, kind="k", actor="a", data={}, created_at=now)
    bulk.insert_sql([proposal])  # compiled once per model, as a submit finds them
    bulk.insert_sql([event])
    expected = [as_sent(fresh_sql(row)[1]) for row in (proposal, event)]
    asked: list[object] = []
    original = SQLInsertCompiler.prepare_value

    def counting(self: SQLInsertCompiler, field: object, value: object) -> object:
        asked.append(field)
        return original(self, field, value)

    monkeypatch.setattr(SQLInsertCompiler, "prepare_value", counting)
    sent = [as_sent(bulk.insert_sql([row])[1]) for row in (proposal, event)]
    assert asked == []
    assert sent == expected  # Int8 / Int4 / Int2 as the compiler wraps them
    proposal.decision_rule_version = True  # not an int of the column's own: the compiler's way
    bulk.insert_sql([proposal])
    assert len(asked) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("when", "outcome", "atomic_blocks"),
    [
        ("payload.amount > 1000.0", "reject", 0),  # rules that read nothing, sent to review
        ("payload.amount < 1000.0", "approve", 1),  # an approval's policy checks: a transaction
        ("stats.count('approve', '1h') > 1000 && payload.amount > 1000.0", "reject", 1),
    ],
    ids=["review", "approved", "stats-rule"],
)
def test_only_a_decision_that_may_touch_the_database_opens_a_transaction(
    shop: ServiceClient,
    make_rule: Callable[..., Rule],
    refund_type: ActionType,
    monkeypatch: pytest.MonkeyPatch,
    when: str,
    outcome: str,
    atomic_blocks: int,
) -> None:
    make_rule("r", action_type=refund_type, when=when, outcome=outcome)
    warm(shop)
    entered: list[object] = []
    original = transaction.Atomic.__enter__

    def counting(self: transaction.Atomic) -> None:
        entered.append(self)
        original(self)

    monkeypatch.setattr(transaction.Atomic, "__enter__", counting)
    proposal = Proposal.objects.get(pk=submit(shop, 5.0))
    assert len(entered) == atomic_blocks
    assert proposal.state == ("approved" if outcome == "approve" else "pending_review")
    assert list(proposal.events.values_list("kind", flat=True)) == [
        "proposal.received",
        "proposal.routed",
    ]
