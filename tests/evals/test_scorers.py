from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from evals import scorers
from evals.scorers import ScorerConfigError, check_config
from llmcalls.models import LLMCall
from tests.evals.scripted_provider import ScriptedProvider, last_user_text


def run(name: str, output: str, ideal: Any, case_input: Any = None, **config: Any) -> scorers.Score:
    check_config(name, config)
    return scorers.score(
        name=name, config=config, output=output, ideal=ideal, case_input=case_input or {}, tags=[]
    )


def test_exact_match() -> None:
    assert run("exact", "  approve\n", "approve").passed
    assert not run("exact", "Approve", "approve").passed
    assert run("exact", "Approve", "approve", case_sensitive=False).passed
    assert run("exact", '{"a": 1, "b": [2]}', {"b": [2], "a": 1}).passed
    assert not run("exact", "not json", {"a": 1}).passed


def test_label_match_on_a_json_field() -> None:
    assert run(
        "label", '{"eligible": true, "reason": "x"}', {"eligible": True}, field="eligible"
    ).passed
    fenced = '```json\n{"decision": {"verdict": "Reject"}}\n```'
    assert run(
        "label", fenced, {"decision": {"verdict": "reject"}}, field="decision.verdict"
    ).passed
    assert run("label", 'Sure! {"eligible": false} hope that helps', False, field="eligible").passed
    wrong = run("label", '{"eligible": "true"}', {"eligible": True}, field="eligible")
    assert not wrong.passed and "expected true" in wrong.detail
    assert "no field" in run("label", '{"other": 1}', {"eligible": True}, field="eligible").detail
    assert not run("label", "no json here", {"eligible": True}, field="eligible").passed


def test_json_schema_valid() -> None:
    schema = {
        "type": "object",
        "required": ["amount"],
        "properties": {"amount": {"type": "number", "minimum": 0}},
    }
    assert run("json_schema", '{"amount": 12.5}', None, schema=schema).passed
    bad = run("json_schema", '{"amount": -1}', None, schema=schema)
    assert not bad.passed and "amount" in bad.detail
    assert run("json_schema", '{"amount": 3}', schema).passed  # no config schema: the ideal is it
    with pytest.raises(ScorerConfigError):
        check_config("json_schema", {"schema": {"type": "nonsense"}})


def test_numeric_tolerance() -> None:
    assert run("numeric", "The refund is 24.99 EUR", 25, abs_tol=0.05).passed
    assert not run("numeric", "The refund is 24.90 EUR", 25, abs_tol=0.05).passed
    assert run("numeric", "1040", 1000, rel_tol=0.05).passed
    assert run("numeric", '{"amount": "12.00"}', {"amount": 12}, field="amount").passed
    assert not run("numeric", "no number", 3).passed
    with pytest.raises(ScorerConfigError):
        check_config("numeric", {"abs_tol": -1})


def test_contains_and_regex() -> None:
    assert run("contains", "We will REFUND order 42", "refund").passed
    assert not run("contains", "We will refund", ["refund", "order 42"]).passed
    assert not run("contains", "Refund", "refund", case_sensitive=True).passed
    assert run("regex", "order ORD-1042 refunded", r"ORD-\d{4}").passed
    assert not run("regex", "nothing", r"ORD-\d{4}").passed
    assert run("regex", "APPROVED", "", pattern="^approved$", ignore_case=True).passed
    with pytest.raises(ScorerConfigError):
        check_config("regex", {"pattern": "("})


def test_custom_scorer_by_dotted_path() -> None:
    half = run("custom", "abcd", "abcdefgh", path="tests.evals.custom_scorers.same_length")
    assert half.value == 0.5 and half.passed  # passes at the default threshold 0.5
    strict = run(
        "custom", "abcd", "abcdefgh", path="tests.evals.custom_scorers.same_length", threshold=0.9
    )
    assert not strict.passed
    score = run(
        "custom",
        "Refund ORD-7 now",
        None,
        {"order_id": "ORD-7"},
        path="tests.evals.custom_scorers.mentions_order",
    )
    assert score.passed and score.detail == "looked for ORD-7"
    broken = run("custom", "x", "x", path="tests.evals.custom_scorers.broken")
    assert not broken.passed and "RuntimeError" in broken.detail
    with pytest.raises(ScorerConfigError):
        check_config("custom", {"path": "tests.evals.custom_scorers.nope"})


def test_unknown_scorers_and_missing_config_are_refused() -> None:
    with pytest.raises(ScorerConfigError, match="unknown scorer"):
        check_config("vibes", {})
    with pytest.raises(ScorerConfigError, match="field"):
        check_config("label", {})
    with pytest.raises(ScorerConfigError, match="route"):
        check_config("model_graded", {})


@pytest.mark.django_db(transaction=True)
def test_model_graded_scorer_asks_the_grader_route_and_keeps_its_call(
    scripted: ScriptedProvider, sim_routes: Callable[..., None]
) -> None:
    sim_routes()
    seen: list[str] = []

    def grader(body: dict[str, Any]) -> str:
        text = last_user_text(body)
        seen.append(text)
        return (
            "PASS\nSame meaning." if "refund granted" in text.split("<<<")[1] else "FAIL\nDiffers."
        )

    scripted.responder = grader
    good = run("model_graded", "Yes, refund granted.", "refund granted", route="evals-small")
    bad = run("model_graded", "No refund.", "refund granted", route="evals-small")
    assert good.passed and good.detail.startswith("model-graded:")
    assert not bad.passed
    assert good.call_id is not None and LLMCall.objects.filter(pk=good.call_id).exists()
    assert "Expected answer:\nrefund granted" in seen[0]

    scripted.responder = lambda body: "Looks fine to me"
    unclear = run("model_graded", "x", "y", route="evals-small")
    assert not unclear.passed and "no PASS/FAIL" in unclear.detail
