"""Pages under /evals/: sets, runs, a run against its baseline, prompts with their accuracy chart.

Cases of a sealed holdout never appear one by one here, only in aggregates.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from evals import selectors
from evals.models import EvalResult, EvalRun, Prompt, Split

CASES_SHOWN = 500


def _require_reader(request: HttpRequest) -> None:
    # The permission, not is_staff: eval cases carry harvested payloads (customer data), and
    # staff holding some other permission must not read them.
    if request.user.has_perm("evals.view_evalset"):
        return
    raise PermissionDenied("Evals are visible to users allowed to view eval sets.")


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    _require_reader(request)
    context = {
        "eval_sets": selectors.eval_sets_overview(),
        "runs": selectors.recent_runs(limit=30),
        "prompts": Prompt.objects.prefetch_related("labels__version").order_by("name"),
    }
    return render(request, "evals/index.html", context)


@login_required
@require_GET
def set_detail(request: HttpRequest, name: str) -> HttpResponse:
    _require_reader(request)
    eval_set = get_object_or_404(selectors.eval_sets_overview(), name=name)
    cases = eval_set.cases.select_related("proposal").order_by("split", "id")
    if eval_set.is_sealed:
        cases = cases.exclude(split=Split.HOLDOUT)
    context = {
        "eval_set": eval_set,
        "cases": cases[:CASES_SHOWN],
        "cases_shown": CASES_SHOWN,
        "runs": selectors.recent_runs(eval_set=eval_set),
    }
    return render(request, "evals/set.html", context)


def _run(pk: int) -> EvalRun:
    run = (
        EvalRun.objects.select_related("eval_set", "prompt_version__prompt", "baseline")
        .filter(pk=pk)
        .first()
    )
    if run is None:
        raise Http404("No such run.")
    return run


@login_required
@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    _require_reader(request)
    run = _run(pk)
    sealed = run.split == Split.HOLDOUT and run.eval_set.is_sealed
    results = (
        []
        if sealed
        else run.results.select_related("case").order_by("passed", "case_id", "attempt")[
            :CASES_SHOWN
        ]
    )
    context = {
        "run": run,
        "sealed": sealed,
        "total": run.totals.get("total") or {},
        "tags": sorted((run.totals.get("tags") or {}).items()),
        "results": results,
        "others": EvalRun.objects.filter(
            eval_set=run.eval_set, split=run.split, status=EvalRun.Status.FINISHED
        )
        .exclude(pk=run.pk)
        .select_related("prompt_version__prompt")
        .order_by("-started_at")[:20],
    }
    return render(request, "evals/run.html", context)


@login_required
@require_GET
def run_compare(request: HttpRequest, pk: int) -> HttpResponse:
    _require_reader(request)
    run = _run(pk)
    baseline_id = request.GET.get("baseline") or run.baseline_id
    if not baseline_id or not str(baseline_id).isdigit():
        raise Http404("This run has no baseline; pick one with ?baseline=RUN.")
    baseline = _run(int(baseline_id))
    if baseline.eval_set_id != run.eval_set_id or baseline.split != run.split:
        raise Http404("The baseline measured another set or split.")
    try:
        threshold = float(request.GET.get("p", selectors.DEFAULT_MAX_REGRESSION_P))
    except ValueError:
        threshold = selectors.DEFAULT_MAX_REGRESSION_P
    if not 0 < threshold < 1:
        threshold = selectors.DEFAULT_MAX_REGRESSION_P
    comparison = selectors.compare_runs(run=run, baseline=baseline, threshold=threshold)
    flips = []
    if not comparison.sealed:
        wanted = comparison.right_to_wrong + comparison.wrong_to_right
        outputs = {
            (r.run_id, r.case_id): r
            for r in EvalResult.objects.filter(
                Q(run=run) | Q(run=baseline), case_id__in=wanted, attempt=0
            ).select_related("case")
        }
        for direction, ids in (
            ("right→wrong", comparison.right_to_wrong),
            ("wrong→right", comparison.wrong_to_right),
        ):
            for case_id in ids:
                now, before = outputs.get((run.pk, case_id)), outputs.get((baseline.pk, case_id))
                flips.append(
                    {"direction": direction, "case_id": case_id, "now": now, "before": before}
                )
    context = {"run": run, "baseline": baseline, "comparison": comparison, "flips": flips}
    return render(request, "evals/compare.html", context)


@login_required
@require_GET
def prompt_detail(request: HttpRequest, name: str) -> HttpResponse:
    _require_reader(request)
    prompt = get_object_or_404(Prompt, name=name)
    context = {
        "prompt": prompt,
        "versions": prompt.versions.prefetch_related("labels").order_by("-version"),
        "moves": prompt.label_moves.all()[:50],
        "chart": selectors.prompt_accuracy_series(prompt=prompt),
    }
    return render(request, "evals/prompt.html", context)
