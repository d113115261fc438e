"""Test a rule (saved or a draft) against history: which past decisions would it change?

The current enabled rules and the same rules with the candidate in place (replacing the rule of
the same name) both run over the last N proposals, each as of the moment it arrived (`now` and
the `stats` windows end at its creation time). The candidate is evaluated as enforced even when
it is in shadow mode — what it would do is the question — and a disabled candidate is tested by
its absence. Where a reviewer decided, the candidate's outcome is compared with the verdict.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from approvals import rules as engine
from approvals.models import Proposal
from approvals.ruledef import RuleDefinition

DEFAULT_LAST = 10_000
BACKTEST_TIME_BUDGET = 1.0  # seconds per proposal: history is not the hot path


@dataclass(frozen=True)
class Disagreement:
    id: str
    summary: str
    action_type: str
    confidence: float
    reviewer_verdict: str
    created_at: str


@dataclass
class BacktestResult:
    rule: str
    last: int
    examined: int = 0
    changed: int = 0
    directions: dict[str, int] = field(default_factory=dict)
    candidate_matched: int = 0
    candidate_errors: int = 0
    reviewer_decided: int = 0
    approved_but_reviewer_rejected: list[Disagreement] = field(default_factory=list)
    rejected_but_reviewer_approved: list[Disagreement] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["approved_but_reviewer_rejected_count"] = len(self.approved_but_reviewer_rejected)
        data["rejected_but_reviewer_approved_count"] = len(self.rejected_but_reviewer_approved)
        return data


def backtest_rule(
    *, candidate: RuleDefinition, last: int = DEFAULT_LAST, replaces: str | None = None
) -> BacktestResult:
    """Test `candidate` (a definition, as a file or the admin form gives it, or a RuleSpec) in
    place of the stored rule named `replaces` (default: its own name).

    Raises engine.RuleCompileError if the candidate's condition is refused, ApplicationError if
    it names an unknown action type.
    """
    spec = candidate if isinstance(candidate, engine.RuleSpec) else engine.RuleSpec.draft(candidate)
    replaced = {spec.name, replaces or spec.name}
    compiled = (
        engine.compile_rule(spec.model_copy(update={"mode": "enforce"})) if spec.enabled else None
    )
    current = engine.current_ruleset()
    others = [r for r in current.rules if r.spec.name not in replaced]
    edited = engine.sort_rules([*others, compiled] if compiled else others)
    broken = [(other, msg) for other, msg in current.broken if other.name not in replaced]

    result = BacktestResult(rule=spec.name, last=last)
    directions: Counter[str] = Counter()
    proposals = Proposal.objects.select_related("service", "action_type").order_by(
        "-created_at", "-id"
    )
    if spec.action_type_id is not None:
        proposals = proposals.filter(action_type_id=spec.action_type_id)
    for proposal in proposals[:last].iterator(chunk_size=500):
        result.examined += 1
        type_id = proposal.action_type_id
        if spec.action_type_id not in (None, type_id):
            continue
        kwargs: dict[str, Any] = {
            "proposal": proposal,
            "service": proposal.service,
            "action_type": proposal.action_type,
            "now": proposal.created_at,
            "stats_as_of": proposal.created_at,
            "time_budget": BACKTEST_TIME_BUDGET,
        }
        before = engine.evaluate(
            rules=current.for_action_type(type_id), broken=current.broken, **kwargs
        )
        after = engine.evaluate(
            rules=[r for r in edited if r.applies_to(type_id)], broken=broken, **kwargs
        )
        for entry in after.trace:
            if entry["rule"] == spec.name:
                result.candidate_matched += entry["result"] == "matched"
                result.candidate_errors += entry["result"] == "error"
        if before.outcome != after.outcome:
            result.changed += 1
            directions[f"{before.outcome}→{after.outcome}"] += 1
        if proposal.decided_by != Proposal.DecidedBy.REVIEWER:
            continue
        result.reviewer_decided += 1
        verdict = proposal.decision_outcome
        row = Disagreement(
            id=str(proposal.id),
            summary=proposal.summary,
            action_type=proposal.action_type.key,
            confidence=proposal.confidence,
            reviewer_verdict=verdict,
            created_at=proposal.created_at.isoformat(),
        )
        if after.outcome == "approve" and verdict == "reject":
            result.approved_but_reviewer_rejected.append(row)
        elif after.outcome == "reject" and verdict == "approve":
            result.rejected_but_reviewer_approved.append(row)
    result.directions = dict(directions.most_common())
    return result


def format_result(result: BacktestResult) -> str:
    lines = [
        f"Rule {result.rule} over the last {result.last} proposals ({result.examined} examined):",
        f"  it matched {result.candidate_matched}, failed to evaluate on {result.candidate_errors}",
        f"  it would change {result.changed} decisions"
        + (
            ": " + ", ".join(f"{d} {n}" for d, n in result.directions.items())
            if result.directions
            else ""
        ),
        f"  where a reviewer decided ({result.reviewer_decided}): it would auto-approve "
        f"{len(result.approved_but_reviewer_rejected)} that reviewers rejected and auto-reject "
        f"{len(result.rejected_but_reviewer_approved)} that reviewers approved",
    ]
    for title, rows in (
        ("auto-approved, reviewer rejected", result.approved_but_reviewer_rejected),
        ("auto-rejected, reviewer approved", result.rejected_but_reviewer_approved),
    ):
        for row in rows:
            lines.append(f"    {title}: {row.id}  {row.summary[:60]}  ({row.confidence:.2f})")
    return "\n".join(lines)
