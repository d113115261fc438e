"""Reads for evals: comparisons between runs, the model choice, series for charts."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet

from evals import stats
from evals.models import EvalCase, EvalRun, EvalSet, Prompt, Split
from evals.services import case_verdicts

DEFAULT_MAX_REGRESSION_P = 0.05


def last_finished_run(
    *, eval_set: EvalSet, split: str, exclude_batch: Any = None
) -> EvalRun | None:
    runs = EvalRun.objects.filter(
        eval_set=eval_set, split=split, status=EvalRun.Status.FINISHED
    ).order_by("-started_at", "-id")
    if exclude_batch is not None:
        runs = runs.exclude(batch=exclude_batch)
    return runs.first()


@dataclass
class TagComparison:
    tag: str  # "" is the total
    n: int  # paired cases
    base_correct: int
    new_correct: int
    right_to_wrong: int  # b
    wrong_to_right: int  # c
    p_value: float
    regression: bool
    base_low: float
    base_high: float
    new_low: float
    new_high: float

    @property
    def base_accuracy(self) -> float | None:
        return self.base_correct / self.n if self.n else None

    @property
    def new_accuracy(self) -> float | None:
        return self.new_correct / self.n if self.n else None

    @property
    def delta(self) -> float | None:
        if not self.n:
            return None
        return (self.new_correct - self.base_correct) / self.n


@dataclass
class Comparison:
    run: EvalRun
    baseline: EvalRun
    threshold: float
    total: TagComparison
    tags: list[TagComparison]
    right_to_wrong: list[int] = field(default_factory=list)  # case ids
    wrong_to_right: list[int] = field(default_factory=list)
    sealed: bool = False  # holdout of a sealed set: case ids are withheld from the UI

    @property
    def regressions(self) -> list[TagComparison]:
        return [t for t in [self.total, *self.tags] if t.regression]


def _compare(tag: str, pairs: list[tuple[bool, bool]], threshold: float) -> TagComparison:
    b = sum(1 for base, new in pairs if base and not new)
    c = sum(1 for base, new in pairs if new and not base)
    p = stats.mcnemar_exact(b, c)
    base_correct = sum(1 for base, _ in pairs if base)
    new_correct = sum(1 for _, new in pairs if new)
    base_ci = stats.wilson(base_correct, len(pairs))
    new_ci = stats.wilson(new_correct, len(pairs))
    return TagComparison(
        tag=tag,
        n=len(pairs),
        base_correct=base_correct,
        new_correct=new_correct,
        right_to_wrong=b,
        wrong_to_right=c,
        p_value=p,
        regression=b > c and p < threshold,
        base_low=base_ci.low,
        base_high=base_ci.high,
        new_low=new_ci.low,
        new_high=new_ci.high,
    )


def compare_runs(
    *, run: EvalRun, baseline: EvalRun, threshold: float = DEFAULT_MAX_REGRESSION_P
) -> Comparison:
    """Pair the two runs case by case (cases both measured) and test each tag and the total.

    A regression is more right→wrong than wrong→right flips with an exact McNemar p below the
    threshold. Tags come from the cases as they are now.
    """
    new = case_verdicts(run.results.all())
    base = case_verdicts(baseline.results.all())
    common = sorted(set(new) & set(base))
    tags_of = dict(EvalCase.objects.filter(pk__in=common).values_list("pk", "tags"))
    pairs = [(base[c], new[c]) for c in common]
    by_tag: dict[str, list[tuple[bool, bool]]] = {}
    for case_id in common:
        for tag in tags_of.get(case_id) or []:
            by_tag.setdefault(tag, []).append((base[case_id], new[case_id]))
    return Comparison(
        run=run,
        baseline=baseline,
        threshold=threshold,
        total=_compare("", pairs, threshold),
        tags=[_compare(tag, p, threshold) for tag, p in sorted(by_tag.items())],
        right_to_wrong=[c for c in common if base[c] and not new[c]],
        wrong_to_right=[c for c in common if new[c] and not base[c]],
        sealed=run.split == Split.HOLDOUT and run.eval_set.is_sealed,
    )


@dataclass
class ModelRow:
    run: EvalRun
    n: int
    correct: int
    low: float
    high: float
    cost_per_case: Decimal | None
    p50_ms: float | None
    p95_ms: float | None
    p_vs_best: float  # exact McNemar against the best run, 1.0 for the best itself
    worse_than_best: bool
    best: bool = False
    cheapest: bool = False
    fastest: bool = False

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None


def model_choice(
    *, runs: list[EvalRun], threshold: float = DEFAULT_MAX_REGRESSION_P
) -> list[ModelRow]:
    """Runs of the same cases on several routes: which are not significantly worse than the
    best, and among those the cheapest (cost per case) and the fastest (p50 latency)."""
    verdicts = {run.pk: case_verdicts(run.results.all()) for run in runs}
    best = max(runs, key=lambda r: (r.accuracy or 0.0, -(r.pk or 0)))
    rows = []
    for run in runs:
        mine = verdicts[run.pk]
        theirs = verdicts[best.pk]
        common = set(mine) & set(theirs)
        b = sum(1 for c in common if theirs[c] and not mine[c])
        c_ = sum(1 for c in common if mine[c] and not theirs[c])
        p = 1.0 if run.pk == best.pk else stats.mcnemar_exact(b, c_)
        n, correct = run.n_cases, run.n_correct
        interval = stats.wilson(correct, n)
        cost_known = run.cost_usd is not None and not run.totals.get("cost_unknown")
        attempts = run.totals.get("attempts") or 0
        rows.append(
            ModelRow(
                run=run,
                n=n,
                correct=correct,
                low=interval.low,
                high=interval.high,
                cost_per_case=(run.cost_usd / attempts)
                if cost_known and attempts and run.cost_usd is not None
                else None,
                p50_ms=run.totals.get("latency_p50_ms"),
                p95_ms=run.totals.get("latency_p95_ms"),
                p_vs_best=p,
                worse_than_best=b > c_ and p < threshold,
                best=run.pk == best.pk,
            )
        )
    eligible = [r for r in rows if not r.worse_than_best]
    priced = [r for r in eligible if r.cost_per_case is not None]
    if priced:
        min(priced, key=lambda r: (r.cost_per_case, r.run.pk)).cheapest = True
    timed = [r for r in eligible if r.p50_ms is not None]
    if timed:
        min(timed, key=lambda r: (r.p50_ms, r.run.pk)).fastest = True
    return rows


# --- pages ---------------------------------------------------------------------------------------


def eval_sets_overview() -> QuerySet[EvalSet]:
    return EvalSet.objects.annotate(
        n_dev=Count("cases", filter=Q(cases__split=Split.DEV)),
        n_holdout=Count("cases", filter=Q(cases__split=Split.HOLDOUT)),
    ).order_by("name")


def recent_runs(*, eval_set: EvalSet | None = None, limit: int = 50) -> QuerySet[EvalRun]:
    runs = EvalRun.objects.select_related("eval_set", "prompt_version__prompt", "baseline")
    if eval_set is not None:
        runs = runs.filter(eval_set=eval_set)
    return runs.order_by("-started_at", "-id")[:limit]


def prompt_accuracy_series(*, prompt: Prompt) -> dict[str, Any]:
    """Finished runs of every version of a prompt, for the chart: one series per
    (set, split, version, route), points (time, accuracy, interval, run id)."""
    runs = (
        EvalRun.objects.filter(prompt_version__prompt=prompt, status=EvalRun.Status.FINISHED)
        .select_related("eval_set", "prompt_version")
        .order_by("started_at", "id")
    )
    series: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run.accuracy is None:
            continue
        name = f"{run.eval_set.name} {run.split} · v{run.prompt_version.version} on {run.route}"
        total = run.totals.get("total") or {}
        series.setdefault(name, []).append(
            {
                "x": run.started_at.isoformat(),
                "y": round(run.accuracy * 100, 2),
                "low": round((total.get("low") or 0) * 100, 2),
                "high": round((total.get("high") or 0) * 100, 2),
                "run": run.pk,
                "route": run.route,
            }
        )
    return {"series": [{"name": k, "points": v} for k, v in series.items()]}
