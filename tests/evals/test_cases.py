from __future__ import annotations

import json
from collections.abc import Callable
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from approvals import services as approvals_services
from approvals.models import Proposal
from evals import services
from evals.models import EvalCase, EvalSet
from foundation.errors import ApplicationError, Conflict
from llmcalls import client
from tests.conftest import ServiceClient, refund_body
from tests.evals.scripted_provider import ScriptedProvider

pytestmark = pytest.mark.django_db


@pytest.fixture
def eval_set(db: None) -> EvalSet:
    return services.eval_set_upsert(
        name="refunds", scorer="label", scorer_config={"field": "verdict"}
    )[0]


def line(**case: object) -> str:
    return json.dumps({"input": {"q": "x"}, "ideal": "y", **case})


def test_import_reads_json_lines_with_splits_and_tags(eval_set: EvalSet, tmp_path: object) -> None:
    lines = [
        line(input=[{"role": "user", "content": "Refund order 1?"}], ideal="yes", tags=["late"]),
        line(input={"order": "2"}, ideal={"eligible": False}, tags=["damaged"], split="holdout"),
        "",
        line(input={"order": "3"}, ideal="no"),
    ]
    report = services.cases_import(eval_set=eval_set, lines=lines)
    assert (report.created, report.skipped, report.by_split) == (3, 0, {"dev": 2, "holdout": 1})
    case = eval_set.cases.get(tags=["damaged"])
    assert (
        case.split == "holdout" and case.source == "imported" and case.ideal == {"eligible": False}
    )

    again = services.cases_import(eval_set=eval_set, lines=lines)
    assert (again.created, again.skipped) == (0, 3)
    assert eval_set.cases.count() == 3


def test_a_bad_line_refuses_the_whole_file_and_names_each_line(eval_set: EvalSet) -> None:
    lines = [
        line(),
        "{not json",
        json.dumps({"input": "just text", "ideal": "y"}),
        line(split="test"),
        line(tags="late"),
        json.dumps({"ideal": "y"}),
        line(extra=1),
        line(input=[{"role": "wizard", "content": "hi"}]),
    ]
    with pytest.raises(ApplicationError) as info:
        services.cases_import(eval_set=eval_set, lines=lines)
    messages = [e["msg"] for e in info.value.errors]
    assert [m.split(":")[0] for m in messages] == [f"line {n}" for n in range(2, 9)]
    assert eval_set.cases.count() == 0


def test_the_import_command(eval_set: EvalSet, tmp_path: object) -> None:
    path = f"{tmp_path}/cases.jsonl"
    with open(path, "w") as handle:
        handle.write(line(ideal="a") + "\n" + line(ideal="b", split="holdout") + "\n")
    out = StringIO()
    call_command("evals", "import", "refunds", path, stdout=out)
    assert "2 cases imported (1 dev, 1 holdout), 0 already present" in out.getvalue()
    with pytest.raises(CommandError, match="No eval set 'nope'"):
        call_command("evals", "import", "nope", path)


def _decided(
    shop: ServiceClient,
    reviewer: User,
    *,
    verdict: str,
    call_id: object,
    edited: dict[str, object] | None = None,
    external_id: str = "",
) -> Proposal:
    response = shop.post_json(
        "/api/v1/proposals",
        refund_body(llm_call_id=str(call_id) if call_id else None, external_id=external_id),
    )
    assert response.status_code == 201, response.content
    proposal = Proposal.objects.get(pk=response.json()["id"])
    approvals_services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
    approvals_services.proposal_decide(
        proposal=proposal,
        reviewer=reviewer,
        verdict=verdict,
        comment="" if verdict == "approve" else "no",
        edited_payload=edited,
    )
    return Proposal.objects.get(pk=proposal.pk)


@pytest.mark.django_db(transaction=True)
def test_harvest_turns_reviewer_verdicts_on_logged_calls_into_cases(
    eval_set: EvalSet,
    shop: ServiceClient,
    reviewer: User,
    scripted: ScriptedProvider,
    sim_routes: Callable[..., None],
) -> None:
    sim_routes()
    scripted.responder = lambda body: (
        '{"action_type": "refund.issue", "payload": {"order_id": "ORD-1", "amount": 25}}'
    )
    messages = [
        {"role": "system", "content": "Propose refunds."},
        {"role": "user", "content": "Parcel 9 days late, order ORD-1, 25 EUR."},
    ]
    calls = [
        client.complete(
            feature="evals-small",
            messages=[*messages, {"role": "user", "content": str(i)}],
            service="shop",  # a proposal links only a call of its own service
        )
        for i in range(3)
    ]
    approved = _decided(shop, reviewer, verdict="approve", call_id=calls[0].call_id)
    edited = _decided(
        shop,
        reviewer,
        verdict="approve",
        call_id=calls[1].call_id,
        edited={"order_id": "ORD-1", "amount": 20.0},
    )
    rejected = _decided(shop, reviewer, verdict="reject", call_id=calls[2].call_id)
    no_call = _decided(shop, reviewer, verdict="approve", call_id=None)
    lost_call = _decided(shop, reviewer, verdict="approve", call_id=None)
    # A link whose call left the log, and one stored before links were checked (another
    # service's call): neither becomes a case.
    Proposal.objects.filter(pk=lost_call.pk).update(
        llm_call_id="00000000-0000-0000-0000-000000000001"
    )
    foreign = client.complete(feature="evals-small", messages=messages, service="other-shop")
    foreign_link = _decided(shop, reviewer, verdict="approve", call_id=None)
    Proposal.objects.filter(pk=foreign_link.pk).update(llm_call_id=foreign.call_id)
    approvals_services.proposal_submit(
        service=shop.service, data=refund_body(llm_call_id=str(calls[0].call_id), summary="pending")
    )

    report = services.cases_harvest(eval_set=eval_set)

    assert (report.created, report.skipped, report.without_call) == (3, 0, 2)
    by_proposal = {c.proposal_id: c for c in eval_set.cases.all()}
    assert set(by_proposal) == {approved.pk, edited.pk, rejected.pk}
    assert no_call.pk not in by_proposal and lost_call.pk not in by_proposal
    assert foreign_link.pk not in by_proposal
    case = by_proposal[approved.pk]
    assert case.source == "harvested" and case.split == "dev"
    assert case.input[:2] == messages
    assert case.ideal == {
        "verdict": "approve",
        "action_type": "refund.issue",
        "payload": approved.payload,
    }
    assert by_proposal[edited.pk].ideal["payload"] == {"order_id": "ORD-1", "amount": 20.0}
    assert "edited" in by_proposal[edited.pk].tags
    assert by_proposal[rejected.pk].ideal["verdict"] == "reject"
    assert by_proposal[rejected.pk].tags[0] == "refund.issue"

    assert services.cases_harvest(eval_set=eval_set).created == 0  # each proposal once
    assert services.cases_harvest(eval_set=eval_set, action_types=["email.send"]).created == 0


def test_harvest_splits_into_holdout_deterministically() -> None:
    picks = [services._holdout_pick(f"proposal-{i}", 0.25) for i in range(2000)]
    assert 0.22 < sum(picks) / len(picks) < 0.28
    assert picks == [services._holdout_pick(f"proposal-{i}", 0.25) for i in range(2000)]
    assert not any(services._holdout_pick(f"p-{i}", 0.0) for i in range(200))


def test_rule_tag_comes_from_the_decision_or_the_enforcing_match_in_the_trace() -> None:
    proposal = Proposal(
        decision_rule="",
        rule_trace=[
            {"rule": "small-refunds", "version": 2, "mode": "enforce", "result": "no_match"},
            {
                "rule": "trial",
                "version": 1,
                "mode": "shadow",
                "result": "matched",
                "outcome": "reject",
            },
            {
                "rule": "big-refunds",
                "version": 4,
                "mode": "enforce",
                "result": "matched",
                "outcome": "review",
            },
        ],
    )
    assert services._rule_of(proposal) == "big-refunds"
    proposal.decision_rule = "auto-approve"
    assert services._rule_of(proposal) == "auto-approve"
    assert services._rule_of(Proposal(decision_rule="", rule_trace=[])) == ""


def test_a_sealed_holdout_refuses_edits_moves_deletes_and_new_cases(eval_set: EvalSet) -> None:
    services.cases_import(
        eval_set=eval_set, lines=[line(ideal="dev"), line(ideal="held", split="holdout")]
    )
    dev = eval_set.cases.get(split="dev")
    held = eval_set.cases.get(split="holdout")
    services.case_update(case=held, ideal="held, corrected")  # allowed before sealing
    services.holdout_seal(eval_set=eval_set)
    sealed_at = EvalSet.objects.get(pk=eval_set.pk).holdout_sealed_at
    assert sealed_at is not None

    with pytest.raises(Conflict, match="sealed"):
        services.case_update(case=held, ideal="tuned")
    with pytest.raises(Conflict, match="sealed"):
        services.case_update(case=held, split="dev")
    with pytest.raises(Conflict, match="sealed"):
        services.case_update(case=dev, split="holdout")
    with pytest.raises(Conflict, match="sealed"):
        services.case_delete(case=held)
    with pytest.raises(Conflict, match="sealed"):
        services.case_add(eval_set=eval_set, input={"q": 1}, ideal="n", split="holdout")
    with pytest.raises(ApplicationError, match="nothing was imported"):
        services.cases_import(eval_set=eval_set, lines=[line(ideal="new", split="holdout")])
    held.refresh_from_db()
    assert held.ideal == "held, corrected" and held.split == "holdout"

    # The dev split stays editable; sealing again changes nothing.
    services.case_update(case=dev, ideal="dev, corrected", tags=["x"])
    services.holdout_seal(eval_set=eval_set)
    assert EvalSet.objects.get(pk=eval_set.pk).holdout_sealed_at == sealed_at
    assert EvalCase.objects.get(pk=dev.pk).tags == ["x"]


def test_the_seal_command(eval_set: EvalSet) -> None:
    out = StringIO()
    call_command("evals", "seal", "refunds", stdout=out)
    assert "holdout sealed" in out.getvalue()
    eval_set.refresh_from_db()
    assert eval_set.is_sealed


def test_the_database_refuses_changes_to_a_sealed_holdout(eval_set: EvalSet) -> None:
    """The backstop under the services: a raw UPDATE/DELETE/INSERT is refused by PostgreSQL."""
    from django.db import DatabaseError, transaction

    services.cases_import(
        eval_set=eval_set, lines=[line(ideal="dev"), line(ideal="held", split="holdout")]
    )
    services.holdout_seal(eval_set=eval_set)
    held = eval_set.cases.filter(split="holdout")
    attempts = [
        lambda: held.update(ideal="tuned"),
        lambda: held.delete(),
        lambda: eval_set.cases.filter(split="dev").update(split="holdout"),
        lambda: EvalCase.objects.create(
            eval_set=eval_set, input={}, ideal=1, split="holdout", fingerprint="x"
        ),
        lambda: EvalSet.objects.filter(pk=eval_set.pk).update(holdout_sealed_at=None),
    ]
    for attempt in attempts:
        with pytest.raises(DatabaseError, match="sealed"), transaction.atomic():
            attempt()
    assert held.get().ideal == "held"
    eval_set.cases.filter(split="dev").update(ideal="fine")  # the dev split stays open


def test_nan_nul_and_lone_surrogates_refuse_the_file_naming_line_and_field(
    eval_set: EvalSet,
) -> None:
    lines = [
        line(),
        line().replace('"y"', "NaN"),
        line(ideal="a\u0000b"),
        line().replace('"y"', '"\\udfff"'),
    ]
    with pytest.raises(ApplicationError) as info:
        services.cases_import(eval_set=eval_set, lines=lines)
    messages = [e["msg"] for e in info.value.errors]
    assert [m.split(":")[0] for m in messages] == ["line 2", "line 3", "line 4"]
    assert "NaN" in messages[0] and "ideal: contains the NUL" in messages[1]
    assert "lone surrogate" in messages[2]
    assert eval_set.cases.count() == 0
