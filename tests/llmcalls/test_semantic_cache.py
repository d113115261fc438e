"""The verdict-aware semantic cache (llmcalls/semcache.py) against the fake provider on loopback:
its chat completions and its embeddings endpoint (the demo model's hashed bag of words)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from approvals import services as approvals_services
from approvals.models import Proposal
from llmcalls import client, routing, semcache, services
from llmcalls.models import LLMCall, ModelPrice, SemanticCacheEntry
from tests.conftest import decide_as, refund_body
from tests.llmcalls.fake_provider import FakeProvider

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Can I get a refund for order 42?"
PARAPHRASE = "Is it possible to get my money back for order 42?"
OTHER_ORDER = "Can I get a refund for order 43?"


def ask(text: str, *, service: str = "shop", feature: str = "faq", **params: Any) -> Any:
    return client.complete(
        feature=feature,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": text},
        ],
        service=service,
        **params,
    )


@pytest.fixture
def semantic_route(fake: FakeProvider, db: None) -> Callable[..., None]:
    """semantic_route(serve="approved_only", model="ok"): feature `faq` with a semantic cache whose
    embeddings come from route `emb` (the fake's demo embeddings), both priced."""

    def make(serve: str = "approved_only", model: str = "ok", feature: str = "faq") -> None:
        for name in ("primary", "embedder"):
            services.provider_upsert(name=name, base_url=fake.base_url(name), api_key_env="")
        for model_name, price in ((model, "1000"), ("demo-embedding", "10")):
            ModelPrice.objects.get_or_create(
                model=model_name,
                provider="",
                defaults={"input_per_mtok": Decimal(price), "output_per_mtok": Decimal(price)},
            )
        common: dict[str, Any] = {
            "deadline": timedelta(seconds=5),
            "cache_ttl": None,
            "daily_budget_usd": None,
            "over_budget": "refuse",
            "params": {},
        }
        services.route_upsert(feature="emb", targets=[("embedder", "demo-embedding")], **common)
        services.route_upsert(
            feature=feature,
            targets=[("primary", model)],
            semantic_cache={
                "embedding_route": "emb",
                "threshold": 0.9,
                "ttl": "3600s",
                "serve": serve,
            },
            **common,
        )
        routing.forget()

    return make


@pytest.fixture(autouse=True)
def _fresh_index() -> Iterator[None]:
    from approvals import rules

    semcache.forget()
    yield
    semcache.forget()
    rules.invalidate()  # a rule made by a test must not outlive its rolled-back row


def chats(fake: FakeProvider) -> int:
    return sum(1 for r in fake.requests if "messages" in r.body)


def test_a_paraphrase_is_served_from_the_cache_with_serve_any(
    fake: FakeProvider, semantic_route: Callable[..., None]
) -> None:
    semantic_route(serve="any")
    first = ask(QUESTION)
    assert (first.cache_hit, chats(fake)) == (False, 1)
    second = ask(PARAPHRASE)
    assert (second.cache_hit, second.cache_kind, chats(fake)) == (True, "semantic", 1)
    assert second.text == first.text and second.cost_usd == 0
    assert second.similarity is not None and second.similarity >= 0.9
    row = LLMCall.objects.get(id=second.call_id)
    assert row.cache_source == first.call_id and (row.cache_similarity or 0) >= 0.9
    assert row.cache_saved_usd == first.cost_usd > 0
    # The embeddings are model calls of their own: logged under the feature, with their cost.
    embeddings = LLMCall.objects.filter(route="emb", feature="faq")
    assert embeddings.count() == 2 and all(e.cost_usd and e.cost_usd > 0 for e in embeddings)


def test_another_order_number_is_a_miss(
    fake: FakeProvider, semantic_route: Callable[..., None]
) -> None:
    semantic_route(serve="any")
    ask(QUESTION)
    assert not ask(OTHER_ORDER).cache_hit
    assert chats(fake) == 2


def test_a_miss_across_keys_system_prompt_parameters_and_tenancy(
    fake: FakeProvider, semantic_route: Callable[..., None]
) -> None:
    semantic_route(serve="any")
    semantic_route(serve="any", feature="faq-other")
    ask(QUESTION)
    # Another service never gets this service's entry, nor another feature, nor other parameters.
    assert not ask(PARAPHRASE, service="other-shop").cache_hit
    assert not ask(PARAPHRASE, feature="faq-other").cache_hit
    assert not ask(PARAPHRASE, temperature=0.5).cache_hit
    other_system = client.complete(
        feature="faq",
        messages=[
            {"role": "system", "content": "Answer at length."},
            {"role": "user", "content": PARAPHRASE},
        ],
        service="shop",
    )
    assert not other_system.cache_hit
    assert ask(PARAPHRASE).cache_hit  # and the same key still hits


def test_no_hit_before_approval_then_a_hit_once_a_reviewer_approves_as_proposed(
    fake: FakeProvider,
    semantic_route: Callable[..., None],
    shop: Any,
    reviewer: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    semantic_route()
    first = ask(QUESTION, service=shop.service.name)
    assert not ask(PARAPHRASE, service=shop.service.name).cache_hit  # not approved yet
    with django_capture_on_commit_callbacks(execute=True):
        proposal = approvals_services.proposal_submit(
            service=shop.service, data=refund_body(llm_call_id=str(first.call_id))
        ).proposal
    assert proposal.state == Proposal.State.PENDING_REVIEW
    assert not ask(PARAPHRASE, service=shop.service.name).cache_hit
    with django_capture_on_commit_callbacks(execute=True):
        decide_as(reviewer, proposal, "approve")
    hit = ask(PARAPHRASE, service=shop.service.name)
    assert (hit.cache_kind, LLMCall.objects.get(id=hit.call_id).cache_source) == (
        "semantic",
        first.call_id,
    )


def test_a_rule_approval_counts(
    fake: FakeProvider,
    semantic_route: Callable[..., None],
    shop: Any,
    make_rule: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    semantic_route()
    make_rule("auto", when="true", outcome="approve")
    first = ask(QUESTION, service=shop.service.name)
    with django_capture_on_commit_callbacks(execute=True):
        proposal = approvals_services.proposal_submit(
            service=shop.service, data=refund_body(llm_call_id=str(first.call_id))
        ).proposal
    assert proposal.state in (Proposal.State.APPROVED, Proposal.State.EXECUTED)
    assert ask(PARAPHRASE, service=shop.service.name).cache_hit


@pytest.mark.parametrize("how", ["reject", "edit"])
def test_a_rejection_or_an_edit_evicts_the_entry_and_the_one_a_call_was_served_from(
    how: str,
    fake: FakeProvider,
    semantic_route: Callable[..., None],
    shop: Any,
    reviewer: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    semantic_route()
    name = shop.service.name
    first = ask(QUESTION, service=name)
    with django_capture_on_commit_callbacks(execute=True):
        approved = approvals_services.proposal_submit(
            service=shop.service, data=refund_body(llm_call_id=str(first.call_id))
        ).proposal
        decide_as(reviewer, approved, "approve")
    served = ask(PARAPHRASE, service=name)
    assert served.cache_kind == "semantic"
    # A proposal built on the served answer is rejected (or edited): the source entry goes.
    with django_capture_on_commit_callbacks(execute=True):
        proposal = approvals_services.proposal_submit(
            service=shop.service,
            data=refund_body(llm_call_id=str(served.call_id), external_id="second"),
        ).proposal
    with django_capture_on_commit_callbacks(execute=True):
        if how == "reject":
            decide_as(reviewer, proposal, "reject", comment="wrong answer")
        else:
            approvals_services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
            approvals_services.proposal_decide(
                proposal=proposal,
                reviewer=reviewer,
                verdict="approve",
                edited_payload={"order_id": "ORD-1", "amount": 5.0, "currency": "EUR"},
            )
    entry = SemanticCacheEntry.objects.get(call_id=first.call_id)
    assert entry.evicted_at is not None and how in entry.evicted_because.replace("edited", "edit")
    assert not ask(PARAPHRASE, service=name).cache_hit


def test_errors_truncation_refusals_and_tool_calls_are_never_stored(
    fake: FakeProvider, semantic_route: Callable[..., None]
) -> None:
    semantic_route(serve="any", model="length")
    assert ask(QUESTION).finish_reason == "length"
    semantic_route(serve="any", model="500")
    with pytest.raises(client.LLMError):
        ask(QUESTION)
    assert not SemanticCacheEntry.objects.exists()
    completion = {"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]}
    assert semcache.cacheable(completion)
    tool = {"choices": [{"message": {"tool_calls": [{"id": "t"}]}, "finish_reason": "tool_calls"}]}
    refusal = {"choices": [{"message": {"content": "", "refusal": "no"}, "finish_reason": "stop"}]}
    assert not semcache.cacheable(tool) and not semcache.cacheable(refusal)


def test_an_embedding_failure_is_a_miss_never_a_failed_call(
    fake: FakeProvider, semantic_route: Callable[..., None]
) -> None:
    semantic_route(serve="any")
    fake.script("embedder", "demo-embedding", "401")
    result = ask(QUESTION)
    assert not result.cache_hit and result.text
    log = LLMCall.objects.get(id=result.call_id).attempt_log
    assert log[0]["target"] == "semantic-cache" and log[0]["outcome"] == "unavailable"


def test_the_proxy_says_which_cache_answered(
    fake: FakeProvider,
    semantic_route: Callable[..., None],
    shop: Any,
    grant: Callable[..., None],
) -> None:
    semantic_route(serve="any")
    grant(shop, "faq")
    headers = {"X-Gatehouse-Feature": "faq"}
    body: dict[str, Any] = {"model": "x", "messages": [{"role": "user", "content": QUESTION}]}
    first = shop.post_json("/llm/v1/chat/completions", body, **headers)
    body["messages"][0]["content"] = PARAPHRASE
    second = shop.post_json("/llm/v1/chat/completions", body, **headers)
    assert (first.status_code, first["X-Gatehouse-Cache"]) == (200, "miss")
    assert (second.status_code, second["X-Gatehouse-Cache"]) == (200, "semantic")


def test_a_stream_is_served_from_the_cache_too(
    fake: FakeProvider, semantic_route: Callable[..., None]
) -> None:
    semantic_route(serve="any")
    ask(QUESTION)
    stream = client.stream(
        feature="faq",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": PARAPHRASE},
        ],
        service="shop",
    )
    text = "".join(delta.text for delta in stream)
    assert stream.cache_kind == "semantic" and text == FakeProvider.ANSWER
    assert chats(fake) == 1


@pytest.mark.django_db(transaction=True)
def test_two_processes_see_the_same_entries(
    fake: FakeProvider, semantic_route: Callable[..., None], settings: Any
) -> None:
    settings.LLM_SEMANTIC_REFRESH = 0.0
    semantic_route(serve="any")
    first = ask(QUESTION)

    def other_process() -> str:
        code = (
            "import django; django.setup()\n"
            "from llmcalls import client\n"
            f"r = client.complete(feature='faq', messages=[{{'role': 'system', 'content': "
            f"'Answer briefly.'}}, {{'role': 'user', 'content': {PARAPHRASE!r}}}], service='shop')\n"
            "print(r.cache_kind or 'miss')\n"
        )
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
            "LLM_SEMANTIC_REFRESH": "0",
        }
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()[-1]

    assert other_process() == "semantic"  # the entry this process wrote
    semcache.verdict(call_id=first.call_id, approved=False, why="test: rejected")
    assert other_process() == "miss"  # and its eviction
    assert chats(fake) == 2  # this one, and the other process's miss


STALE_PROCESS = """
import sys
import django

django.setup()
from llmcalls import client, semcache

for line in sys.stdin:
    if line.strip() == "ask":
        r = client.complete(
            feature="faq",
            messages=[
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": sys.argv[1]},
            ],
            service="shop",
        )
        print(r.cache_kind or "miss", flush=True)
    else:
        print(sum(semcache.index().servable(k) for k in semcache.index().keys), flush=True)
"""


@pytest.mark.django_db(transaction=True)
def test_a_process_whose_index_is_stale_does_not_serve_an_evicted_entry(
    fake: FakeProvider, semantic_route: Callable[..., None]
) -> None:
    """A process that read the entry into its index and will not look at the table again for
    an hour: after another process evicts the entry its index still ranks it, and the lookup
    still refuses to serve it."""
    semantic_route(serve="any")
    first = ask(QUESTION)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
        "LLM_SEMANTIC_REFRESH": "3600",
    }
    other = subprocess.Popen(
        [sys.executable, "-c", STALE_PROCESS, PARAPHRASE],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdin is not None and other.stdout is not None

    def tell(command: str) -> str:
        assert other.stdin is not None and other.stdout is not None
        other.stdin.write(command + "\n")
        other.stdin.flush()
        return other.stdout.readline().strip()

    try:
        assert tell("ask") == "semantic"
        assert tell("count") == "1"
        semcache.verdict(call_id=first.call_id, approved=False, why="test: rejected")
        assert tell("count") == "1"  # its index has not heard of the eviction…
        assert tell("ask") == "miss"  # …and the entry is not served all the same
        # It stopped ranking the evicted entry and indexed the answer of its own miss instead.
        assert tell("count") == "1"
        assert SemanticCacheEntry.objects.filter(evicted_at__isnull=True).count() == 1
    finally:
        other.stdin.close()
        other.wait(timeout=30)
    assert chats(fake) == 2


def test_the_index_finds_what_brute_force_finds_and_skips_what_it_may_not_serve() -> None:
    """The column-major sketch search against an exact float32 scan of the same entries."""
    import time

    import numpy as np

    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = semcache._KeyIndex(64)
    # The index only knows the time its caller gives it: the searches run at `start`, however
    # long building the index took on a loaded machine, and the expiry is checked at a time
    # given rather than slept to.
    start = time.time()
    for i, vector in enumerate(vectors):
        # Entry 0 is not approved, entry 1 evicted, entry 2 expires in a moment.
        index.put(
            i,
            vector.astype(np.float16),
            live=i != 1,
            approved=i != 0,
            expires=start + 0.2 if i == 2 else start + 3600,
        )
    stored = vectors.astype(np.float16).astype(np.float32)

    def best(
        q: np.ndarray, *, approved_only: bool = True, now: float = start
    ) -> list[tuple[int, float]]:
        sketch = semcache.sketch(q[None, :])[0]
        return index.search(q, sketch, approved_only=approved_only, now=now, threshold=0.9)

    for target in rng.integers(3, 3000, 50):
        q = vectors[target] + rng.standard_normal(64).astype(np.float32) * 0.03
        q /= np.linalg.norm(q)
        found = best(q)
        assert found and found[0][0] == int(np.argmax(stored @ q))
        assert found[0][1] == pytest.approx(float(np.max(stored @ q)), abs=1e-5)
    assert best(vectors[0]) == [] and best(vectors[0], approved_only=False)[0][0] == 0
    assert best(vectors[1], approved_only=False) == []
    assert best(vectors[2], now=start + 0.19)[0][0] == 2
    assert best(vectors[2], now=start + 0.25) == []
    # Unrelated questions (cosine ~0) are not even compared: no candidate passes the sketch.
    assert best(-vectors[5]) == []
    assert semcache.within(0.9) < semcache.within(0.5) < semcache.SKETCH_BITS // 2 + 40


def _pairs_file(tmp_path: Path) -> Path:
    pairs = [
        {"a": QUESTION, "b": PARAPHRASE, "same": True},
        {"a": "Please cancel order 7.", "b": "I want to cancel my order 7.", "same": True},
        {"a": "Where is my order 9?", "b": "Can you track order 9 for me?", "same": True},
        {"a": QUESTION, "b": OTHER_ORDER, "same": False},
        {
            "a": "Please cancel order 7.",
            "b": "Please cancel the refund for order 7.",
            "same": False,
        },
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in pairs) + "\n")
    return path


def test_tune_cache_prints_each_threshold_and_refuses_when_no_bound_is_met(
    fake: FakeProvider, semantic_route: Callable[..., None], tmp_path: Path, capsys: Any
) -> None:
    semantic_route()
    with pytest.raises(CommandError, match="no threshold keeps"):
        call_command("llmcalls", "tune_cache", "faq", "--eval-set", str(_pairs_file(tmp_path)))
    out = capsys.readouterr().out
    assert "5 pairs (3 same answer, 2 different)" in out
    assert " 0.90 " in out and "precision" in out and "hit rate" in out
    # "cancel the refund" is 0.866 from "cancel": the lowest threshold above it with three right
    # hits and no wrong one meets a lenient target (three hits bound wrong hits at 0.63).
    call_command(
        "llmcalls", "tune_cache", "faq", "--eval-set", str(_pairs_file(tmp_path)), "--target", "0.7"
    )
    assert "chosen threshold: 0.87 " in capsys.readouterr().out


def test_the_shipped_set_bounds_wrong_hits_below_one_percent() -> None:
    """The demo's labelled pairs, scored without the network: some threshold meets 1%."""
    import numpy as np

    from approvals.demo_model import embedding
    from llmcalls import tuning
    from llmcalls.management.commands.llmcalls import _pairs

    pairs = _pairs("support_paraphrases")
    scored = [(float(np.dot(embedding(a), embedding(b))), same) for a, b, same in pairs]
    rows = tuning.table(scored, [0.8, 0.85, 0.9, 0.95])
    chosen = tuning.pick(rows, 0.01)
    assert chosen is not None and chosen.threshold == 0.9 and chosen.wrong == 0
    assert rows[0].wrong > 0  # lower thresholds do serve wrong answers: the bound matters
    # The demo's route for such questions uses that threshold, with the demo model's embeddings.
    from foundation import configfile

    demo = configfile.parse((ROOT / "config" / "demo.yaml").read_text())
    routes = {route.feature: route for route in demo["llm_routes"]}
    cache = routes["support-faq"].semantic_cache
    assert cache is not None and (cache.threshold, cache.serve) == (0.9, "approved_only")
    assert [t.model for t in routes[cache.embedding_route].models] == ["demo-embedding"]


def test_clopper_pearson_matches_the_closed_form_for_no_events() -> None:
    from llmcalls.tuning import clopper_pearson_upper

    assert clopper_pearson_upper(0, 299) == pytest.approx(1 - 0.05 ** (1 / 299), rel=1e-6)
    assert clopper_pearson_upper(0, 0) == 1.0
    assert 0.05 < clopper_pearson_upper(5, 100) < 0.11


def test_the_llm_page_shows_semantic_hits_and_saved_cost_and_the_call_its_source(
    fake: FakeProvider, semantic_route: Callable[..., None], admin_client_logged_in: Any
) -> None:
    semantic_route(serve="any")
    first = ask(QUESTION)
    hit = ask(PARAPHRASE)
    html = admin_client_logged_in.get("/llm/").content.decode()
    assert f"1 semantic, ${first.cost_usd:.4f} saved" in html
    detail = admin_client_logged_in.get(f"/llm/calls/{hit.call_id}/").content.decode()
    start = detail.index("llm-facts")
    assert f"/llm/calls/{first.call_id}/" in detail, detail[start : start + 1500]
    assert re.search(r"similarity (0\.9\d{3}|1\.0000)", detail)
