from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db.backends.signals import connection_created
from django.middleware.common import CommonMiddleware
from django.test import Client

from approvals import services
from approvals.models import ActionType, Service

REFUND_SCHEMA = {
    "type": "object",
    "required": ["order_id", "amount"],
    "additionalProperties": False,
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "amount": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
    },
}


def _allow_audit_maintenance(sender: Any, connection: Any, **kwargs: Any) -> None:
    # Transactional tests empty every table with TRUNCATE between tests; the audit table's
    # triggers refuse that unless the session opts in (see migration 0002).
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET gatehouse.audit_maintenance = 'on'")


connection_created.connect(_allow_audit_maintenance)


def _flush_by_delete() -> None:
    """Empty the tables after a transactional test with DELETE, not Django's TRUNCATE.

    TRUNCATE gives each of the ~60 tables (and its indexes) a new file at every flush: 0.3-2 s
    per transactional test on a loaded machine, over ~450 of them. DELETE of the few rows a test
    left is ~30 ms and leaves the same state: every table empty, sequences not reset (TRUNCATE
    without RESTART IDENTITY does not reset them either), then flush's post_migrate recreates
    the content types and permissions as before. Like TRUNCATE it bypasses the row triggers
    (append-only audit, frozen holdouts, the approved-sum bookkeeping) and the foreign keys:
    `session_replication_role = replica` for the deletes. Statement triggers still fire, as
    they would on TRUNCATE: each table gets a second DELETE (now of nothing) in the origin role,
    so the rules' NOTIFY reaches the other processes (a browser test's server, workers).
    Needs a superuser (the suite's `postgres`); otherwise TRUNCATE, as Django does."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush
    if getattr(truncate, "_gatehouse_delete", False):
        return

    def sql_flush(
        self: DatabaseOperations,
        style: Any,
        tables: Any,
        *,
        reset_sequences: bool = False,
        allow_cascade: bool = False,
    ) -> list[str]:
        if reset_sequences or not tables or not _is_superuser(self.connection):
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        deletes = [f"DELETE FROM {self.quote_name(table)};" for table in tables]  # noqa: S608
        return [
            "SET LOCAL session_replication_role = replica;",
            *deletes,
            "SET LOCAL session_replication_role = origin;",
            *deletes,
        ]

    sql_flush._gatehouse_delete = True  # type: ignore[attr-defined]
    DatabaseOperations.sql_flush = sql_flush  # type: ignore[method-assign,assignment]


def _is_superuser(connection: Any) -> bool:
    known = getattr(connection, "_gatehouse_superuser", None)
    if known is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('is_superuser') = 'on'")
            known = bool(cursor.fetchone()[0])
        connection._gatehouse_superuser = known
    return bool(known)


_flush_by_delete()


# --- pytest-xdist (`make test` runs PYTEST_WORKERS of them): a Redis database per worker ------


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[Any]) -> None:
    """Worker gwN gets the Redis database of REDIS_URL plus N, before it imports the settings:
    the channel layer's and Celery's keys live in the numbered database, and the pub/sub
    channels carry its number or the worker's own PostgreSQL database name (pytest-django
    gives each worker one: test_<name>_gwN, so NOTIFY channels and advisory locks are apart)."""
    import os
    from urllib.parse import urlsplit, urlunsplit

    url = os.environ.get("REDIS_URL", "")
    if not url:
        return
    parts = urlsplit(url)
    first = int(parts.path.lstrip("/") or 0)
    if first + len(specs) > 16:
        raise pytest.UsageError(
            f"{len(specs)} workers need Redis databases {first}-{first + len(specs) - 1} "
            f"from REDIS_URL={url}: pick a lower number or fewer workers"
        )
    for number, spec in enumerate(specs, start=first):
        spec.env["REDIS_URL"] = urlunsplit(parts._replace(path=f"/{number}"))


# --- approvals' own tests without insights, in the background (tests/without_insights.py) ----

_without_insights_key = pytest.StashKey[Any]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests import without_insights

    if not hasattr(config, "workerinput"):
        return
    # Under pytest-xdist the test runs the background run itself, on the worker that takes it;
    # first, so that run starts at once and the other workers share the rest (--dist
    # worksteal). Every worker orders its collection alike, as xdist requires.
    chosen = [item for item in items if item.nodeid == without_insights.NODE_ID]
    for item in chosen:
        items.remove(item)
        items.insert(0, item)


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests import without_insights

    chosen = [item for item in session.items if item.nodeid == without_insights.NODE_ID]
    if not chosen or session.config.option.collectonly or hasattr(session.config, "workerinput"):
        return
    # The test only collects the run's result: last, so the rest of the suite overlaps the run.
    session.items.remove(chosen[0])
    session.items.append(chosen[0])
    session.config.stash[_without_insights_key] = without_insights.Run().start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(_without_insights_key, None)
    if run is not None:
        run.stop()


@pytest.fixture
def approvals_without_insights(request: pytest.FixtureRequest) -> Any:
    """The background run of approvals' tests without insights (started now if it was not)."""
    from tests import without_insights

    run = request.config.stash.get(_without_insights_key, None)
    if run is None:
        run = without_insights.Run().start()
        request.config.stash[_without_insights_key] = run
    return run


class ServiceClient(Client):
    """A test client that speaks for one service: its bearer key and JSON bodies."""

    def __init__(self, service: Service, key: str) -> None:
        super().__init__(HTTP_AUTHORIZATION=f"Bearer {key}")
        self.service = service
        self.key = key

    def post_json(self, path: str, body: Any, **headers: Any) -> Any:
        return self.post(path, body, content_type="application/json", headers=headers)


@pytest.fixture
def refund_type(db: None) -> ActionType:
    return ActionType.objects.create(
        key="refund.issue",
        title="Issue a refund",
        payload_schema=REFUND_SCHEMA,
        risk="medium",
        reviewer_group=Group.objects.get_or_create(name="support")[0],
    )


@pytest.fixture
def email_type(db: None) -> ActionType:
    return ActionType.objects.create(
        key="email.send",
        title="Send an email",
        irreversible=True,
        payload_schema={
            "type": "object",
            "required": ["to"],
            "properties": {"to": {"type": "string"}},
        },
    )


@pytest.fixture
def make_service(db: None) -> Callable[..., ServiceClient]:
    def make(name: str, *types: ActionType) -> ServiceClient:
        service, key = services.service_create(name=name, action_type_keys=[t.key for t in types])
        return ServiceClient(service, key)

    return make


@pytest.fixture
def shop(make_service: Callable[..., ServiceClient], refund_type: ActionType) -> ServiceClient:
    """The service under test, allowed to propose refunds."""
    return make_service("shop", refund_type)


@pytest.fixture
def other_shop(
    make_service: Callable[..., ServiceClient], refund_type: ActionType
) -> ServiceClient:
    """Another service, also allowed refunds: it must never see the first one's proposals."""
    return make_service("other-shop", refund_type)


@pytest.fixture
def reviewer(db: None) -> User:
    user = User.objects.create_user("rita", password="pw-rita-123456")
    user.groups.add(Group.objects.get_or_create(name="support")[0])
    return user


def refund_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action_type": "refund.issue",
        "payload": {"order_id": "ORD-1", "amount": 25.0, "currency": "EUR"},
        "confidence": 0.91,
        "summary": "Refund a late delivery",
        "rationale": "The parcel arrived 9 days late; policy allows a full refund.",
        "model": "gpt-4o-mini",
        "prompt_version": "refunds@3",
        "feature": "support-refunds",
    }
    body.update(overrides)
    return body


# --- reviewer workspace (issue 5) -----------------------------------------------------------


@pytest.fixture
def second_reviewer(db: None) -> User:
    """Another reviewer of the same team: the second pair of eyes."""
    user = User.objects.create_user("sam", password="pw-sam-1234567")
    user.groups.add(Group.objects.get_or_create(name="support")[0])
    return user


@pytest.fixture
def other_team_reviewer(db: None) -> User:
    """A reviewer of another team: must never see or decide support's proposals."""
    user = User.objects.create_user("otto", password="pw-otto-123456")
    user.groups.add(Group.objects.get_or_create(name="trust-and-safety")[0])
    return user


@pytest.fixture
def outsider(db: None) -> User:
    """Logged in, in no reviewer group."""
    return User.objects.create_user("olga", password="pw-olga-123456")


@pytest.fixture
def submit(shop: ServiceClient) -> Callable[..., Any]:
    """Submit a refund proposal from `shop` through the service layer; returns the Proposal."""

    def make(**overrides: Any) -> Any:
        body = refund_body(**overrides)
        return services.proposal_submit(service=shop.service, data=body).proposal

    return make


@pytest.fixture
def make_rule(db: None) -> Callable[..., Any]:
    """Create a rule through the service that versions it: make_rule("name", when=…, outcome=…)."""
    from approvals.models import Rule

    def make(name: str, *, action_type: ActionType | None = None, **fields: Any) -> Rule:
        fields.setdefault("outcome", "approve")
        fields.setdefault("when", "true")
        rule = Rule(name=name, action_type=action_type, **fields)
        services.rule_save(rule=rule, actor="test")
        return rule

    return make


def logged_in(user: User, **defaults: Any) -> Client:
    client = Client(**defaults)
    client.force_login(user)
    return client


@pytest.fixture
def admin_client_logged_in(db: None) -> Client:
    User.objects.create_superuser("ada", password="pw-ada-123456")
    client = Client()
    client.login(username="ada", password="pw-ada-123456")
    return client


def _forget_process_caches() -> None:
    # Every per-process cache a test can fill: the hot-path TTL caches (service keys, action
    # types, insights' gate policies, llmcalls' routing snapshot: foundation.ttlcache keeps them
    # all), the compiled rules (a transactional test's flush sends no NOTIFY, so rules it created
    # would otherwise still apply in later tests) and the remembered absences of live listeners.
    from approvals import events, rules
    from foundation import ttlcache

    ttlcache.clear_every()
    rules.invalidate()
    events.forget_absences()


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Any:
    _forget_process_caches()
    yield
    _forget_process_caches()


def decide_as(reviewer: User, proposal: Any, verdict: str = "approve", comment: str = "") -> Any:
    """Claim, then decide, as a reviewer does from the proposal page (a decision needs a claim)."""
    services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
    return services.proposal_decide(
        proposal=proposal, reviewer=reviewer, verdict=verdict, comment=comment
    )


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashes() -> Iterator[None]:
    # Passwords hashed in this process cost 1,000 PBKDF2 rounds, not 1,000,000 (tests/hashers.py).
    from django.conf import settings
    from django.test.utils import override_settings

    fast = override_settings(
        PASSWORD_HASHERS=["tests.hashers.FastPBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
    )
    fast.enable()
    yield
    fast.disable()


@pytest.fixture(scope="session", autouse=True)
def _stop_rules_listener(django_db_setup: Any) -> Any:
    # The rules cache listens on its own connection to the test database; close it before
    # the database is dropped.
    yield
    from approvals import rules

    rules._listener.stop()


# --- execution: a real worker process and a real webhook receiver (tests/execution_support.py) --


@pytest.fixture
def receiver() -> Any:
    from tests.execution_support import Receiver

    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def workers(transactional_db: None, tmp_path: Any) -> Any:
    """Start workers with `workers(name="w", **env)`; all are stopped before the tables empty."""
    from tests.execution_support import Worker

    started: list[Worker] = []

    def start(name: str = "worker", **env: str) -> Worker:
        worker = Worker(tmp_path, name=name, env=env)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def demo_model_url() -> Iterator[str]:
    """The demo's simulated model (`manage.py simulate_provider`'s server) on a free port."""
    import threading

    from llmcalls.management.commands.simulate_provider import make_server

    server = make_server("127.0.0.1", 0, latency=(0.0, 0.01))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


# --- traces (telemetry/tracing.py) ---------------------------------------------------------------

_span_exporter: Any = None


@pytest.fixture
def spans() -> Any:
    """Tracing on for one test, into the SDK's in-memory exporter; returns the exporter."""
    global _span_exporter
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from telemetry import tracing

    if _span_exporter is None:  # the global provider can be set once per process
        _span_exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_span_exporter))
        trace.set_tracer_provider(provider)
    _span_exporter.clear()
    tracing.instrument()
    yield _span_exporter
    tracing.uninstrument()
    _span_exporter.clear()


@pytest.fixture
def common_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths CommonMiddleware (after foundation.dispatch in MIDDLEWARE) saw: a path that
    foundation.dispatch hands straight to its view never shows here."""
    seen: list[str] = []
    original = CommonMiddleware.process_request

    def spy(self: CommonMiddleware, request: Any) -> Any:
        seen.append(request.path)
        return original(self, request)

    monkeypatch.setattr(CommonMiddleware, "process_request", spy)
    return seen


def assert_stack_headers(answer: Any) -> None:
    """What the middleware a directly dispatched answer skipped would have given it, it has."""
    assert answer["X-Request-ID"]
    assert answer["X-Frame-Options"] == "DENY"
    assert answer["X-Content-Type-Options"] == "nosniff"
    assert "default-src" in answer["Content-Security-Policy"]
    assert answer["Content-Length"] == str(len(answer.content))
