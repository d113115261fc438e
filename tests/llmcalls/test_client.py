from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone

from llmcalls import client
from llmcalls.breaker import MemoryBreaker
from llmcalls.models import LLMCall
from tests.llmcalls.conftest import MESSAGES
from tests.llmcalls.fake_provider import FakeProvider

pytestmark = pytest.mark.django_db

Route = Callable[..., None]


def only_call() -> LLMCall:
    calls = list(LLMCall.objects.all())
    assert len(calls) == 1, calls
    return calls[0]


# --- answers, log and cost ------------------------------------------------------------------------


def test_it_answers_and_logs_the_whole_call(
    fake: FakeProvider, make_route: Route, prices: None
) -> None:
    make_route("support", "primary/ok", params={"temperature": 0})

    result = client.complete(feature="support", messages=MESSAGES, max_tokens=50)

    assert result.text == "Hello from the fake provider."
    assert (result.provider, result.model, result.finish_reason) == ("primary", "ok", "stop")
    assert fake.requests[0].body["temperature"] == 0
    assert fake.requests[0].body["max_tokens"] == 50
    call = only_call()
    assert call.id == result.call_id
    assert call.id.version == 7  # time-ordered (foundation.ids)
    assert call.status == "ok"
    assert call.messages == MESSAGES
    assert call.params == {"temperature": 0, "max_tokens": 50}
    assert call.response_text == "Hello from the fake provider."
    assert (call.input_tokens, call.output_tokens, call.cached_tokens) == (12, 7, 0)
    assert call.cost_usd == Decimal("0.026")  # 12 x $1000 + 7 x $2000 per million
    assert call.provider_request_id == "req_fake_1"
    assert call.attempts == 1 and call.fallback_path == ["primary/ok"] and not call.fell_back
    assert call.latency_ms is not None and call.latency_ms > 0


def test_it_sends_the_provider_the_openai_wire_format_whole_and_streamed(
    fake: FakeProvider, make_route: Route, prices: None
) -> None:
    # llmcalls speaks the wire format itself (no SDK on the way out): what the SDK sent, the
    # route's params over the caller's, and a stream that asks for its usage.
    make_route("support", "primary/ok", params={"temperature": 0})

    client.complete(feature="support", messages=MESSAGES, max_tokens=50, temperature=1)
    with client.stream(feature="support", messages=MESSAGES, max_tokens=50) as streamed:
        assert "".join(delta.text for delta in streamed) == "Hello from the fake provider."

    whole, stream = fake.requests
    assert whole.body == {"model": "ok", "messages": MESSAGES, "max_tokens": 50, "temperature": 0}
    assert stream.body == {
        "model": "ok",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 50,
        "temperature": 0,
    }
    for received, accept in ((whole, "application/json"), (stream, "text/event-stream")):
        headers = {k.lower(): v for k, v in received.headers.items()}
        assert headers["authorization"] == "Bearer not-needed"
        assert headers["content-type"] == "application/json"
        assert headers["accept"] == accept
        assert headers["user-agent"] == "gatehouse-llmcalls"
    assert {c.status for c in LLMCall.objects.all()} == {"ok"}


def test_cached_input_tokens_are_billed_at_the_cached_price(
    fake: FakeProvider, make_route: Route, prices: None
) -> None:
    make_route("support", "primary/ok")
    fake.usage = {"prompt_tokens": 12, "completion_tokens": 7, "cached_tokens": 10}

    result = client.complete(feature="support", messages=MESSAGES)

    # 2 fresh x $1000 + 10 cached x $500 + 7 out x $2000, per million tokens
    assert result.cost_usd == Decimal("0.021")
    assert only_call().cached_tokens == 10


def test_an_unknown_price_gives_no_cost_and_a_warning_never_zero(
    fake: FakeProvider, make_route: Route, caplog: pytest.LogCaptureFixture
) -> None:
    make_route("support", "primary/unpriced-model")

    result = client.complete(feature="support", messages=MESSAGES)

    assert result.cost_usd is None
    call = only_call()
    assert call.cost_usd is None and call.price_missing
    assert "no price for primary/unpriced-model" in caplog.text


def test_common_models_come_with_dated_public_prices(fake: FakeProvider, make_route: Route) -> None:
    from llmcalls.models import ModelPrice

    make_route("support", "primary/gpt-4o-mini")

    result = client.complete(feature="support", messages=MESSAGES)

    # 12 in x $0.15 + 7 out x $0.60 per million tokens
    assert result.cost_usd == Decimal("0.000006")
    seeded = ModelPrice.objects.get(model="gpt-4o-mini", provider="")
    assert seeded.effective_from.isoformat() == "2024-07-18" and seeded.source.startswith(
        "https://"
    )


def test_a_price_is_taken_as_of_the_day_of_the_call(fake: FakeProvider, make_route: Route) -> None:
    from llmcalls import routing
    from llmcalls.models import ModelPrice

    today = timezone.now().date()
    ModelPrice.objects.create(
        model="ok", input_per_mtok=1, output_per_mtok=1, effective_from=today - timedelta(days=30)
    )
    ModelPrice.objects.create(
        model="ok", input_per_mtok=100, output_per_mtok=100, effective_from=today + timedelta(1)
    )
    routing.forget()
    make_route("support", "primary/ok")

    assert client.complete(feature="support", messages=MESSAGES).cost_usd == Decimal("0.000019")


def test_a_feature_without_a_route_is_refused_and_logged(fake: FakeProvider, db: None) -> None:
    with pytest.raises(client.NoRoute) as caught:
        client.complete(feature="nowhere", messages=MESSAGES)

    call = only_call()
    assert call.id == caught.value.call_id
    assert call.status == "refused" and call.error_class == "NoRoute"


def test_a_call_may_follow_another_route_and_stays_under_its_feature(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/ok")
    make_route("support-small", "backup/small")

    result = client.complete(feature="support", route="support-small", messages=MESSAGES)

    assert (result.provider, result.model) == ("backup", "small")
    call = only_call()
    assert (call.feature, call.route) == ("support", "support-small")
    with pytest.raises(client.NoRoute, match="No route named 'nope'"):
        client.complete(feature="support", route="nope", messages=MESSAGES)


def test_a_route_named_default_serves_features_without_their_own(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("default", "primary/ok")
    assert client.complete(feature="anything", messages=MESSAGES).provider == "primary"
    assert (only_call().feature, only_call().route) == ("anything", "default")


# --- retries ---------------------------------------------------------------------------------------


def test_it_retries_a_server_error_then_succeeds(fake: FakeProvider, make_route: Route) -> None:
    make_route("support", "primary/m", "backup/m")
    fake.script("primary", "m", "500", "503")

    result = client.complete(feature="support", messages=MESSAGES)

    assert result.provider == "primary"
    assert fake.tried() == ["primary/m"] * 3
    call = only_call()
    assert call.attempts == 3
    assert [a["outcome"] for a in call.attempt_log] == ["error", "error", "ok"]
    assert "HTTP 500" in call.attempt_log[0]["detail"]


def test_it_honours_retry_after(fake: FakeProvider, make_route: Route) -> None:
    make_route("support", "primary/m", deadline=5)
    fake.script("primary", "m", "429:1")

    started = time.monotonic()
    client.complete(feature="support", messages=MESSAGES)

    first, second = fake.requests
    assert second.at - first.at >= 1.0
    assert time.monotonic() - started < 2.0


def test_a_retry_after_longer_than_the_deadline_falls_back_at_once(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/m", "backup/m", deadline=3)
    fake.script("primary", "m", "429:30")

    started = time.monotonic()
    result = client.complete(feature="support", messages=MESSAGES)

    assert time.monotonic() - started < 1.0
    assert result.provider == "backup"
    assert fake.tried() == ["primary/m", "backup/m"]


@pytest.mark.parametrize("status", ["400", "422"])
def test_a_request_the_provider_calls_invalid_is_neither_retried_nor_sent_elsewhere(
    fake: FakeProvider, make_route: Route, status: str
) -> None:
    make_route("support", f"primary/{status}", f"backup/{status}")

    with pytest.raises(client.RequestRefused):
        client.complete(feature="support", messages=MESSAGES)

    assert fake.tried() == [f"primary/{status}"]
    assert only_call().status == "error"


# --- fallback ----------------------------------------------------------------------------------------


def test_it_falls_back_in_route_order_when_retries_are_exhausted(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/500", "backup/404", "third/ok")

    result = client.complete(feature="support", messages=MESSAGES)

    assert result.provider == "third"
    # 500 is retried (1 + 2 retries); 404 goes to the next target at once.
    assert fake.tried() == ["primary/500"] * 3 + ["backup/404", "third/ok"]
    call = only_call()
    assert call.fallback_path == ["primary/500", "backup/404", "third/ok"]
    assert call.fell_back and call.attempts == 5


def test_a_malformed_answer_falls_back_without_retrying(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/malformed", "backup/ok")

    assert client.complete(feature="support", messages=MESSAGES).provider == "backup"
    assert fake.tried() == ["primary/malformed", "backup/ok"]
    assert "not a chat completion" in only_call().attempt_log[0]["detail"]


def test_when_every_model_fails_the_error_is_raised_and_logged(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/500", "backup/malformed")

    with pytest.raises(client.AllModelsFailed) as caught:
        client.complete(feature="support", messages=MESSAGES)

    call = only_call()
    assert call.id == caught.value.call_id
    assert call.status == "error" and call.error_class == "AllModelsFailed"
    assert call.attempts == 4


# --- the deadline --------------------------------------------------------------------------------------


def test_one_deadline_holds_across_hanging_attempts_and_fallbacks(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/hang", "backup/hang", deadline=1)

    started = time.monotonic()
    with pytest.raises(client.DeadlineExceeded):
        client.complete(feature="support", messages=MESSAGES)
    elapsed = time.monotonic() - started

    assert 1.0 <= elapsed < 1.3
    assert only_call().error_class == "DeadlineExceeded"


def test_the_deadline_holds_under_retries_and_fallbacks(
    fake: FakeProvider, make_route: Route
) -> None:
    # The primary asks to wait 0.5 s three times (1 s of waiting), then the backup hangs.
    make_route("support", "primary/m", "backup/hang", deadline=1.5)
    fake.script("primary", "m", "429:0.5", "429:0.5", "429:0.5")

    started = time.monotonic()
    with pytest.raises(client.DeadlineExceeded):
        client.complete(feature="support", messages=MESSAGES)
    elapsed = time.monotonic() - started

    assert 1.5 <= elapsed < 1.8
    assert fake.tried() == ["primary/m"] * 3 + ["backup/hang"]
    assert only_call().fallback_path == ["primary/m", "backup/hang"]


def test_a_deadline_given_per_call_overrides_the_route(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/hang", deadline=30)

    started = time.monotonic()
    with pytest.raises(client.DeadlineExceeded):
        client.complete(feature="support", messages=MESSAGES, deadline=timedelta(seconds=0.5))
    assert time.monotonic() - started < 0.8


def test_a_hung_model_is_abandoned_after_the_attempt_timeout_for_the_next(
    fake: FakeProvider, make_route: Route, settings: Any
) -> None:
    # Without attempt_timeout the primary would hold the call for the whole 5 s deadline.
    make_route("support", "primary/hang", "backup/m", deadline=5, attempt_timeout=0.3)

    completion = client.complete(feature="support", messages=MESSAGES)

    retries = settings.LLM_MAX_RETRIES
    assert completion.model == "m" and completion.provider == "backup"
    assert fake.tried() == ["primary/hang"] * (retries + 1) + ["backup/m"]
    log = only_call()
    assert log.fallback_path == ["primary/hang", "backup/m"]
    assert [a["outcome"] for a in log.attempt_log] == ["error"] * (retries + 1) + ["ok"]


def test_a_stream_that_gives_no_first_token_in_time_falls_back(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/hang", "backup/m", deadline=5, attempt_timeout=0.3)

    stream = client.stream(feature="support", messages=MESSAGES)
    text = "".join(delta.text for delta in stream)

    assert text and stream.result is not None and stream.result.provider == "backup"
    assert only_call().fallback_path == ["primary/hang", "backup/m"]


def test_a_stream_that_stalls_longer_than_the_attempt_timeout_is_cut(
    fake: FakeProvider, make_route: Route
) -> None:
    # After its first token a stream does not fall back: the stall is an error, not a wait
    # until the 5 s deadline.
    make_route("support", "primary/stall", deadline=5, attempt_timeout=0.3)

    started = time.monotonic()
    stream = client.stream(feature="support", messages=MESSAGES)
    with pytest.raises(client.StreamCut):
        for _ in stream:
            pass
    assert time.monotonic() - started < 3


# --- circuit breaker ------------------------------------------------------------------------------------


def test_the_circuit_opens_after_repeated_failures_and_closes_after_a_success(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/m", "backup/m")
    fake.script("primary", "m", "500", "500", "500")  # three failures: the threshold in tests

    assert client.complete(feature="support", messages=MESSAGES).provider == "backup"
    fake.reset()

    # Open: the primary is skipped without a request.
    assert client.complete(feature="support", messages=MESSAGES).provider == "backup"
    assert fake.tried() == ["backup/m"]
    assert LLMCall.objects.latest("created_at").attempt_log[0] == {
        "target": "primary/m",
        "outcome": "skipped",
        "detail": "circuit open",
    }
    fake.reset()

    with time_machine.travel(timezone.now() + timedelta(seconds=31), tick=True):
        # Half-open after the cooldown: one try, which succeeds and closes the circuit.
        assert client.complete(feature="support", messages=MESSAGES).provider == "primary"
        fake.script("primary", "m", "500")
        assert client.complete(feature="support", messages=MESSAGES).provider == "primary"
        assert fake.tried() == ["primary/m", "primary/m", "primary/m"]  # a retry, not skipped


def test_a_failure_after_the_cooldown_reopens_the_circuit_at_once(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/m", "backup/m")
    fake.script("primary", "m", "500", "500", "500")
    client.complete(feature="support", messages=MESSAGES)

    with time_machine.travel(timezone.now() + timedelta(seconds=31), tick=True):
        fake.reset()
        fake.script("primary", "m", "malformed")  # one failure, no retry: reopened
        assert client.complete(feature="support", messages=MESSAGES).provider == "backup"
        fake.reset()
        assert client.complete(feature="support", messages=MESSAGES).provider == "backup"
        assert fake.tried() == ["backup/m"]


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL")
def test_processes_share_the_circuit_through_redis(settings: Any) -> None:
    from llmcalls.breaker import RedisBreaker

    settings.LLM_CIRCUIT_FAILURES = 2
    one, other = RedisBreaker(settings.REDIS_URL), RedisBreaker(settings.REDIS_URL)
    one.reset()
    assert one.check("p/m") == (False, False)  # read from Redis and kept for a second
    other.failure("p/m")
    other.failure("p/m")
    assert other.check("p/m")[0]  # at once in the process that opened it
    assert one.check("p/m") == (False, False)  # not yet here: its copy is fresh
    with time_machine.travel(time.time() + settings.LLM_CIRCUIT_REFRESH + 0.1):
        assert one.check("p/m") == (True, True)  # read again after LLM_CIRCUIT_REFRESH
        other.success("p/m")
        assert other.check("p/m") == (False, False)
    settings.LLM_CIRCUIT_REFRESH = 0  # every check reads Redis
    one.failure("p/m")
    one.failure("p/m")
    assert other.check("p/m")[0]


def test_the_in_memory_breaker_follows_the_same_steps(settings: Any) -> None:
    settings.LLM_CIRCUIT_FAILURES = 3
    settings.LLM_CIRCUIT_COOLDOWN = 30
    breaker = MemoryBreaker()
    for _ in range(2):
        breaker.failure("p/m")
    assert breaker.check("p/m") == (False, True)
    breaker.failure("p/m")
    assert breaker.check("p/m")[0] is True
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        assert breaker.check("p/m")[0] is False
    breaker.success("p/m")
    assert breaker.check("p/m") == (False, False)


# --- cache --------------------------------------------------------------------------------------------------


def test_an_identical_call_is_answered_from_the_cache_at_zero_cost(
    fake: FakeProvider, make_route: Route, prices: None
) -> None:
    make_route("support", "primary/ok", cache_ttl=60)

    first = client.complete(feature="support", messages=MESSAGES)
    second = client.complete(feature="support", messages=MESSAGES)

    assert len(fake.requests) == 1
    assert second.text == first.text and second.cache_hit and not first.cache_hit
    hit = LLMCall.objects.get(id=second.call_id)
    assert hit.cache_hit and hit.cost_usd == Decimal(0) and hit.status == "ok"
    assert LLMCall.objects.get(id=first.call_id).cost_usd == Decimal("0.026")


def test_other_messages_or_params_miss_the_cache(fake: FakeProvider, make_route: Route) -> None:
    make_route("support", "primary/ok", cache_ttl=60)

    client.complete(feature="support", messages=MESSAGES)
    client.complete(feature="support", messages=[{"role": "user", "content": "Other"}])
    client.complete(feature="support", messages=MESSAGES, temperature=0.5)

    assert len(fake.requests) == 3
    assert not LLMCall.objects.filter(cache_hit=True).exists()


def test_the_cache_key_does_not_depend_on_the_provider(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/ok", cache_ttl=60)
    client.complete(feature="support", messages=MESSAGES)

    make_route("support", "backup/ok", cache_ttl=60)
    assert client.complete(feature="support", messages=MESSAGES).cache_hit
    assert fake.tried() == ["primary/ok"]


def test_the_cache_expires(fake: FakeProvider, make_route: Route, settings: object) -> None:
    make_route("support", "primary/ok", cache_ttl=1)
    client.complete(feature="support", messages=MESSAGES)
    time.sleep(1.1)
    assert not client.complete(feature="support", messages=MESSAGES).cache_hit


def test_errors_and_truncated_answers_are_never_cached(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/m", cache_ttl=60)
    fake.script("primary", "m", "malformed")
    with pytest.raises(client.AllModelsFailed):
        client.complete(feature="support", messages=MESSAGES)
    fake.script("primary", "m", "length", "length")

    truncated = client.complete(feature="support", messages=MESSAGES)
    again = client.complete(feature="support", messages=MESSAGES)

    assert truncated.finish_reason == "length" and not again.cache_hit
    assert len(fake.requests) == 3


def test_a_route_without_cache_ttl_never_caches(fake: FakeProvider, make_route: Route) -> None:
    make_route("support", "primary/ok")
    client.complete(feature="support", messages=MESSAGES)
    client.complete(feature="support", messages=MESSAGES)
    assert len(fake.requests) == 2


# --- budgets ----------------------------------------------------------------------------------------------------


def test_a_spent_budget_refuses_with_a_clear_error(
    fake: FakeProvider, make_route: Route, prices: None
) -> None:
    make_route("support", "primary/ok", budget="0.04")  # a call costs $0.026

    client.complete(feature="support", messages=MESSAGES)
    client.complete(feature="support", messages=MESSAGES)  # $0.026 spent < cap: allowed
    with pytest.raises(client.BudgetExceeded, match=r"spent \$0.0520 of its daily budget"):
        client.complete(feature="support", messages=MESSAGES)

    assert len(fake.requests) == 2
    refused = LLMCall.objects.get(status="refused")
    assert refused.error_class == "BudgetExceeded"

    with time_machine.travel(timezone.now() + timedelta(days=1), tick=True):
        assert client.complete(feature="support", messages=MESSAGES).text  # a new day


def test_over_budget_next_model_continues_on_the_cheaper_model_and_says_so(
    fake: FakeProvider, make_route: Route, prices: None
) -> None:
    make_route("support", "primary/ok", "backup/small", budget="0.01", over_budget="next-model")

    first = client.complete(feature="support", messages=MESSAGES)
    second = client.complete(feature="support", messages=MESSAGES)

    assert (first.model, second.model) == ("ok", "small")
    assert not LLMCall.objects.get(id=first.call_id).over_budget
    assert LLMCall.objects.get(id=second.call_id).over_budget


def test_a_budgeted_route_skips_a_model_without_a_price(
    fake: FakeProvider, make_route: Route, prices: None
) -> None:
    make_route("support", "primary/unpriced", "backup/ok", budget="10")

    assert client.complete(feature="support", messages=MESSAGES).provider == "backup"
    assert fake.tried() == ["backup/ok"]
    assert "no price" in only_call().attempt_log[0]["detail"]


def test_budgets_are_per_feature(fake: FakeProvider, make_route: Route, prices: None) -> None:
    make_route("a", "primary/ok", budget="0.01")
    make_route("b", "primary/ok", budget="0.01")
    client.complete(feature="a", messages=MESSAGES)
    with pytest.raises(client.BudgetExceeded):
        client.complete(feature="a", messages=MESSAGES)
    assert client.complete(feature="b", messages=MESSAGES).text


# --- the log survives -----------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_failed_call_is_logged_even_when_the_callers_transaction_rolls_back(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/500")

    with pytest.raises(client.AllModelsFailed), transaction.atomic():
        client.complete(feature="support", messages=MESSAGES)

    assert only_call().status == "error"


@pytest.mark.django_db(transaction=True)
def test_a_successful_call_is_logged_even_when_the_callers_transaction_rolls_back(
    fake: FakeProvider, make_route: Route
) -> None:
    """Inside a caller's transaction the row goes in on a second connection of the pool, with
    the same one-statement prepared INSERT: it stays when the caller rolls back."""
    make_route("support", "primary/ok")

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        result = client.complete(feature="support", messages=MESSAGES)
        raise Rollback

    call = only_call()
    assert (call.id, call.status, call.messages) == (result.call_id, "ok", MESSAGES)
    assert call.response_text == result.text


def test_a_log_write_that_fails_puts_the_record_in_the_log_instead(
    fake: FakeProvider,
    make_route: Route,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmcalls import services

    make_route("support", "primary/ok")

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(services, "_insert", refuse)
    result = client.complete(feature="support", messages=MESSAGES)

    assert result.text
    assert "llm call log write failed" in caplog.text
    assert str(result.call_id) in caplog.text and "Is order 42 eligible" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_successful_call_is_logged_in_one_statement_that_commits_without_the_wal_flush(
    fake: FakeProvider, make_route: Route
) -> None:
    from django.db import connection

    from tests.approvals.test_bulk import LibpqTrace

    make_route("support", "primary/ok")
    client.complete(feature="support", messages=MESSAGES)  # warm: the route, the price, the pool
    LLMCall.objects.all().delete()
    with LibpqTrace() as trace:
        client.complete(feature="support", messages=MESSAGES)
    writes = [sql for sql in trace.sent if sql.split(" ", 1)[0] in {"INSERT", "BEGIN", "COMMIT"}]
    # No BEGIN, SET LOCAL and COMMIT around it: the INSERT is its own transaction, and turns off
    # synchronous_commit for that transaction only, from its RETURNING, before it commits.
    assert len(writes) == 1 and writes[0].startswith("INSERT"), trace.sent
    assert "set_config('synchronous_commit', 'off', true)" in writes[0]
    assert not any(sql.startswith("SET") for sql in trace.sent), trace.sent
    # Its values go apart from the SQL, to the statement prepared by the first call on this
    # connection: nothing of it parsed again (the messages are not quoted into the SQL either).
    assert not any(sql.startswith("INSERT") for sql in trace.parsed), trace.parsed
    assert "fake provider" not in writes[0] and "$1" in writes[0]
    assert only_call().status == "ok"
    assert only_call().messages == MESSAGES
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"  # it did not outlive the statement


@pytest.mark.django_db(transaction=True)
def test_a_failed_call_is_logged_with_a_durable_commit(
    fake: FakeProvider, make_route: Route
) -> None:
    from tests.approvals.test_bulk import LibpqTrace

    make_route("support", "primary/500")
    with LibpqTrace() as trace, pytest.raises(client.AllModelsFailed):
        client.complete(feature="support", messages=MESSAGES)
    inserts = [sql for sql in trace.sent if sql.startswith("INSERT")]
    assert len(inserts) == 1 and "synchronous_commit" not in inserts[0], trace.sent
    assert only_call().status == "error"
