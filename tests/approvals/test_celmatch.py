"""`matches` on an anchored literal pattern, rewritten once per rule (approvals/celmatch.py):
the same result and the same error as the condition as written, and no regex compiled for a
string that cannot match."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals import celmatch, rules
from approvals.models import ActionType, Proposal, Rule, Service
from tests.conftest import ServiceClient, refund_body

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def compiled(when: str, *, outcome: str = "reject", mode: str = "enforce") -> rules.CompiledRule:
    return rules.compile_rule(
        rules.RuleSpec.model_construct(
            name="r",
            when=when,
            priority=1,
            outcome=outcome,
            reason="",
            mode=mode,
            allows_irreversible=False,
            approvals_required=1,
            action_type_id=1,
            version=1,
        )
    )


def decide(rule: rules.CompiledRule, payload: dict[str, Any]) -> rules.AutoDecision:
    return rules.evaluate(
        proposal=Proposal(confidence=0.87, model="m", feature="f", prompt_version="p@1"),
        service=Service(pk=1, name="shop"),
        action_type=ActionType(pk=1, key="refund.issue", irreversible=False, risk="low"),
        rules=[rule],
        payload=payload,
        now=NOW,
        time_budget=10.0,
    )


def as_written(rule: rules.CompiledRule) -> rules.CompiledRule:
    return rules.CompiledRule(
        spec=rule.spec, program=rule.program, uses_stats=rule.uses_stats, cost=rule.cost
    )


@pytest.mark.parametrize(
    ("when", "rewritten"),
    [
        (
            "payload.order_id.matches('^REF-[0-9]+$') && confidence < 0.95",
            "_gatehouse_matches(payload.order_id, '^REF-[0-9]+$') && confidence < 0.95",
        ),
        (
            'has(payload.reason) && payload.reason . matches( "^ab?c" )',
            'has(payload.reason) && _gatehouse_matches(payload.reason, "^ab?c")',
        ),
        (
            "model.matches('^gpt-4') || payload.x.matches('^ORD-1')",
            "_gatehouse_matches(model, '^gpt-4') || _gatehouse_matches(payload.x, '^ORD-1')",
        ),
        (
            "payload.a.b.matches('^x') && payload.items.exists(i, i.matches('^y'))",
            "_gatehouse_matches(payload.a.b, '^x') && "
            "payload.items.exists(i, _gatehouse_matches(i, '^y'))",
        ),
        # Left as written: no anchor, an alternation, no literal start, a pattern that does not
        # compile, a receiver that is not a plain selection, a raw string, a string literal
        # that only looks like the call.
        ("payload.order_id.matches('REF-[0-9]+')", None),
        ("payload.order_id.matches('^REF|^ORD')", None),
        ("payload.order_id.matches('^(REF)')", None),
        ("payload.order_id.matches('^R[')", None),
        ("payload.order_id.matches('^R?E')", None),
        ("(payload.order_id + 'x').matches('^REF')", None),
        ("payload.order_id.matches(r'^REF')", None),
        ("payload.order_id == \"a.matches('^REF')\"", None),
    ],
)
def test_which_calls_are_rewritten(when: str, rewritten: str | None) -> None:
    assert celmatch.rewrite(when) == rewritten


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("^REF-[0-9]+$", "REF-"),
        ("^REF-6+", "REF-"),
        ("^ab?c", "a"),
        ("^ab{2}", "a"),
        ("^abc", "abc"),
        ("^a.c", "a"),
        ("^a\\.c", "a"),
        ("^(?i)abc", ""),
        ("^abc|x", ""),
        ("abc", ""),
    ],
)
def test_the_prefix_is_only_what_every_match_starts_with(pattern: str, prefix: str) -> None:
    assert celmatch.anchored_prefix(pattern) == prefix


def test_a_rule_that_reads_stats_is_left_as_written() -> None:
    rule = compiled("payload.id.matches('^A') && stats.count('approve', '1h') > 5")
    assert rule.fast is None


CONDITIONS = [
    "payload.v.matches('^REF-[0-9]+$')",
    "payload.v.matches('^REF-6[0-9]+$') && confidence < 0.95",
    "!payload.v.matches('^ab?c')",
    "payload.v.matches('^a.c$') || payload.w == 1.0",
    "has(payload.v) && payload.v.matches('^ORD-')",
    "payload.v.matches('^x') && false",
    "payload.v.matches('^x') || true",
    "[payload.v, 'REF-1'].exists(i, i.matches('^REF-'))",
]
VALUES = st.one_of(
    st.sampled_from(["REF-1", "REF-6123", "REF-", "REF-12\n", "ORD-9", "abc", "ac", "a\nc", ""]),
    st.text(alphabet="REF-60123abcORD\n.x", max_size=8),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    when=st.sampled_from(CONDITIONS),
    value=VALUES,
    present=st.booleans(),
    w=st.sampled_from([1.0, 2.0]),
)
def test_a_rewritten_rule_decides_exactly_as_the_condition_as_written(
    when: str, value: Any, present: bool, w: float
) -> None:
    rule = compiled(when)
    assert rule.fast is not None
    payload = {"w": w, **({"v": value} if present else {})}
    assert decide(rule, payload) == decide(as_written(rule), payload)


def test_a_string_that_cannot_match_compiles_no_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoRegex:
        def execute(self, context: Any) -> bool:
            raise AssertionError("the library's matches was called")

    rule = compiled("payload.order_id.matches('^REF-[0-9]+$')")
    monkeypatch.setattr(celmatch, "_BUILTIN", NoRegex())
    decision = decide(rule, {"order_id": "ORD-48213"})
    assert [e["result"] for e in decision.trace] == ["no_match"]
    # A string with the prefix goes to the library (here: the stand-in that refuses), and the
    # rule as written decides.
    assert decide(rule, {"order_id": "REF-7"}).outcome == "reject"


def test_an_error_is_the_library_s_own(monkeypatch: pytest.MonkeyPatch) -> None:
    rule = compiled("payload.order_id.matches('^REF-[0-9]+$')")
    fast = decide(rule, {"order_id": 5})
    written = decide(as_written(rule), {"order_id": 5})
    assert fast == written
    assert fast.trace[0]["result"] == "error"
    assert "_gatehouse_matches" not in fast.trace[0]["error"]


def test_the_submit_decides_by_a_rewritten_rule(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    make_rule(
        "refs",
        action_type=refund_type,
        priority=1,
        when="payload.order_id.matches('^REF-[0-9]+$')",
        outcome="reject",
    )
    make_rule(
        "orders", action_type=refund_type, priority=2, when="payload.order_id.matches('^ORD-')"
    )
    assert rules.current_ruleset().rules[0].fast is not None
    body = shop.post_json("/api/v1/proposals", refund_body()).json()
    assert body["state"] == "approved"
    assert [(e["rule"], e["result"]) for e in body["decision"]["trace"]] == [
        ("refs", "no_match"),
        ("orders", "matched"),
    ]
    body = shop.post_json(
        "/api/v1/proposals", refund_body(payload={"order_id": "REF-12", "amount": 5})
    ).json()
    assert body["state"] == "rejected"
    assert body["decision"]["rule"] == "refs"
