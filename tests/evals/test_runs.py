from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from evals import selectors, services
from evals.models import EvalResult, EvalRun, EvalSet
from foundation.errors import ApplicationError
from llmcalls.models import LLMCall
from tests.evals.scripted_provider import ScriptedProvider

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def test_a_run_stores_every_result_with_its_call_and_totals(
    refund_set: EvalSet, sim_routes: Callable[..., None], scripted: ScriptedProvider
) -> None:
    sim_routes()
    version = services.prompt_resolve(ref="refunds@1")
    progress: list[tuple[int, int]] = []

    run = services.run_execute(
        eval_set=refund_set,
        version=version,
        concurrency=4,
        on_progress=lambda d, t: progress.append((d, t)),
    )

    run.refresh_from_db()
    assert run.status == EvalRun.Status.FINISHED
    assert run.n_cases == 48
    assert len(scripted.requests) == 48
    assert progress[0] == (0, 48) and progress[-1] == (48, 48)
    results = list(run.results.select_related("case"))
    assert len(results) == 48
    calls = LLMCall.objects.in_bulk([r.llm_call_id for r in results])
    assert len(calls) == 48
    for result in results:
        call = calls[result.llm_call_id]
        assert (call.feature, call.route, call.service) == ("evals:refunds", "evals-large", "evals")
        assert call.response_text == result.output
        assert result.latency_ms and result.latency_ms > 0
        assert result.cost_usd is not None and result.cost_usd > 0
        assert result.cost_usd == call.cost_usd
        assert result.passed == (result.score == 1.0)
    assert run.n_correct == sum(r.passed for r in results)
    assert run.cost_usd == sum((r.cost_usd or Decimal(0) for r in results), Decimal(0))
    totals = run.totals
    assert totals["total"]["low"] < run.accuracy < totals["total"]["high"]
    assert set(totals["tags"]) >= {"damaged", "final_sale", "digital", "changed_mind"}
    assert totals["tags"]["damaged"]["n"] == 8
    # v1 has no final-sale clause: the simulated model guesses the 30-day window and is wrong
    # on the six final-sale cases inside it.
    assert totals["tags"]["final_sale"]["correct"] <= 3
    assert totals["latency_p50_ms"] <= totals["latency_p95_ms"]


def test_repeat_runs_each_case_k_times_and_counts_a_case_by_majority(
    refund_set: EvalSet, sim_routes: Callable[..., None], scripted: ScriptedProvider
) -> None:
    sim_routes()
    run = services.run_execute(
        eval_set=refund_set,
        version=services.prompt_resolve(ref="refunds@2"),
        split="holdout",
        repeat=3,
    )
    assert run.results.count() == 12 * 3
    assert sorted(set(run.results.values_list("attempt", flat=True))) == [0, 1, 2]
    assert run.n_cases == 12
    assert run.totals["attempts"] == 36


def test_the_command_prints_the_table_and_fails_on_a_planted_regression(
    refund_set: EvalSet, sim_routes: Callable[..., None], scripted: ScriptedProvider
) -> None:
    sim_routes()
    out, err = StringIO(), StringIO()
    call_command("evals", "run", "refunds", "--prompt", "refunds@1", stdout=out, stderr=err)
    first = EvalRun.objects.get()
    assert "accuracy" in out.getvalue() and "95% CI" in out.getvalue()
    assert "48/48" in err.getvalue()

    # Version 2 drops the 90-day clause for damaged items: six damaged cases go right→wrong
    # (exact McNemar p = 2/64 = 0.031) while the total improves.
    out = StringIO()
    with pytest.raises(CommandError, match="significant regression: damaged") as exit_info:
        call_command(
            "evals",
            "run",
            "refunds",
            "--prompt",
            "refunds@2",
            "--baseline",
            "last",
            stdout=out,
            stderr=StringIO(),
        )
    assert exit_info.value.returncode == 1
    text = out.getvalue()
    assert "REGRESSION" in text
    second = EvalRun.objects.exclude(pk=first.pk).get()
    assert second.baseline_id == first.pk
    comparison = selectors.compare_runs(run=second, baseline=first)
    damaged = next(t for t in comparison.tags if t.tag == "damaged")
    assert damaged.regression and damaged.right_to_wrong >= 6
    assert not comparison.total.regression
    assert second.accuracy is not None and first.accuracy is not None
    assert second.accuracy > first.accuracy

    # The same comparison with a stricter threshold passes the gate.
    out = StringIO()
    call_command(
        "evals",
        "run",
        "refunds",
        "--prompt",
        "refunds@2",
        "--baseline",
        str(first.pk),
        "--max-regression-p",
        "0.01",
        stdout=out,
        stderr=StringIO(),
    )
    assert "REGRESSION" not in out.getvalue()


def test_several_models_mark_the_cheapest_and_fastest_not_significantly_worse(
    refund_set: EvalSet, sim_routes: Callable[..., None], scripted: ScriptedProvider
) -> None:
    sim_routes()
    out = StringIO()
    call_command(
        "evals",
        "run",
        "refunds",
        "--prompt",
        "refunds@2",
        "--model",
        "evals-large",
        "--model",
        "evals-small",
        "--model",
        "evals-tiny",
        stdout=out,
        stderr=StringIO(),
    )
    runs = list(EvalRun.objects.order_by("id"))
    assert [r.route for r in runs] == ["evals-large", "evals-small", "evals-tiny"]
    assert len({r.batch for r in runs}) == 1
    rows = {r.run.route: r for r in selectors.model_choice(runs=runs)}
    assert rows["evals-tiny"].worse_than_best
    assert "cheapest" in out.getvalue() and "fastest" in out.getvalue()
    assert EvalResult.objects.count() == 3 * 48


def test_the_process_exits_non_zero_on_a_regression_and_zero_without(
    refund_set: EvalSet, sim_routes: Callable[..., None], scripted: ScriptedProvider
) -> None:
    """The CI gate as CI sees it: a real `manage.py evals run` process and its exit status."""
    sim_routes()
    first = services.run_execute(
        eval_set=refund_set, version=services.prompt_resolve(ref="refunds@1")
    )
    name = connection.settings_dict["NAME"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{name}",
        "LLM_CONFIG_TTL": "0",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "evals", "run", "refunds", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    regressed = run("--prompt", "refunds@2", "--baseline", str(first.pk))
    assert regressed.returncode == 1, regressed.stderr
    assert "significant regression: damaged" in regressed.stderr
    same = run("--prompt", "refunds@1", "--baseline", str(first.pk))
    assert same.returncode == 0, same.stderr
    assert "REGRESSION" not in same.stdout
    unknown = run("--prompt", "refunds@9")
    assert unknown.returncode == 2


def test_a_spent_budget_stops_the_run_and_fails_it(
    refund_set: EvalSet, sim_routes: Callable[..., None], scripted: ScriptedProvider
) -> None:
    # One sim-large call costs $0.00008 (12 tokens in at $2/M, 7 out at $8/M): two calls spend
    # the $0.0001 budget and llmcalls refuses the third.
    sim_routes(budget=Decimal("0.0001"))
    run = services.run_execute(
        eval_set=refund_set,
        version=services.prompt_resolve(ref="refunds@1"),
        concurrency=1,
    )
    assert run.status == EvalRun.Status.FAILED and "budget" in run.error
    assert len(scripted.requests) == 2
    errors = list(run.results.exclude(error="").values_list("error", flat=True))
    assert len(errors) == 46
    assert sum("BudgetExceeded" in e for e in errors) == 1
    assert sum(e.startswith("not run") for e in errors) == 45
    assert selectors.last_finished_run(eval_set=refund_set, split="dev") is None


def test_a_missing_route_or_empty_split_is_refused_before_any_call(
    refund_set: EvalSet, sim_routes: Callable[..., None], scripted: ScriptedProvider
) -> None:
    sim_routes()
    version = services.prompt_resolve(ref="refunds@1")
    with pytest.raises(ApplicationError, match="No llmcalls route 'nope'"):
        services.run_execute(eval_set=refund_set, version=version, route="nope")
    refund_set.cases.filter(split="holdout").delete()
    with pytest.raises(ApplicationError, match="no holdout cases"):
        services.run_execute(eval_set=refund_set, version=version, split="holdout")
    assert scripted.requests == [] and not EvalRun.objects.exists()


class _Stream(StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_progress_bar_redraws_on_a_terminal_and_prints_tenths_otherwise() -> None:
    from evals.management.commands.evals import Progress

    terminal, log = _Stream(True), _Stream(False)
    for stream in (terminal, log):
        progress = Progress(stream, "route")
        for done in range(0, 41):
            progress(done, 40)
    assert terminal.getvalue().count("\r") == 41 and "\n" not in terminal.getvalue()[:-1]
    assert terminal.getvalue().endswith("s\n")
    lines = log.getvalue().splitlines()
    assert len(lines) == 11 and lines[0].startswith("route [....") and "40/40" in lines[-1]
