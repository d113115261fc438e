"""Plain-text tables for `manage.py evals run`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from evals.models import EvalRun
from evals.selectors import Comparison, ModelRow


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def interval(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "—"
    return f"[{low * 100:.1f}, {high * 100:.1f}]"


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def usd(value: Decimal | str | None, *, unknown: int = 0) -> str:
    if value is None:
        return "unknown"
    text = f"${Decimal(value):.6f}"
    return f"≥ {text} ({unknown} calls unpriced)" if unknown else text


def p_value(value: float) -> str:
    return f"{value:.4f}" if value >= 0.0001 else f"{value:.1e}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cell_row(name: str, cell: dict[str, Any]) -> list[str]:
    return [
        name,
        str(cell["n"]),
        str(cell["correct"]),
        pct(cell["accuracy"]),
        interval(cell["low"], cell["high"]),
    ]


def run_report(run: EvalRun) -> str:
    totals = run.totals
    head = (
        f"Run {run.pk}: {run.eval_set.name} [{run.split}] · prompt {run.prompt_version} · "
        f"route {run.route} · {run.n_cases} cases x {run.repeat} · scorer {run.scorer}"
    )
    if run.model_graded:
        head += "\n  MODEL-GRADED: the scores below are another model's judgement, not a rule's."
    if run.status != EvalRun.Status.FINISHED:
        head += f"\n  RUN {run.status.upper()}: {run.error}"
    rows = [_cell_row("total", totals["total"])]
    rows += [_cell_row(f"  {tag}", cell) for tag, cell in totals["tags"].items()]
    lines = [head, "", table(["", "n", "right", "accuracy", "95% CI (Wilson)"], rows), ""]
    lines.append(
        f"cost {usd(totals['cost_usd'], unknown=totals['cost_unknown'])} · "
        f"latency p50 {ms(totals['latency_p50_ms'])}, p95 {ms(totals['latency_p95_ms'])} · "
        f"errors {totals['errors']} of {totals['attempts']} calls"
        + (f" · {totals['flaky']} cases disagree across repeats" if run.repeat > 1 else "")
    )
    return "\n".join(lines)


def comparison_report(comparison: Comparison) -> str:
    base, run = comparison.baseline, comparison.run
    lines = [
        f"Against baseline run {base.pk} ({base.prompt_version} on {base.route}), "
        f"{comparison.total.n} paired cases; regression = more right→wrong than wrong→right "
        f"with exact McNemar p < {comparison.threshold:g}",
        "",
    ]
    rows = []
    for t in [comparison.total, *comparison.tags]:
        rows.append(
            [
                f"  {t.tag}" if t.tag else "total",
                str(t.n),
                pct(t.base_accuracy),
                pct(t.new_accuracy),
                "—" if t.delta is None else f"{t.delta * 100:+.1f}",
                str(t.right_to_wrong),
                str(t.wrong_to_right),
                p_value(t.p_value),
                "REGRESSION" if t.regression else "",
            ]
        )
    lines.append(
        table(
            [
                "",
                "n",
                f"run {base.pk}",
                f"run {run.pk}",
                "Δ pts",
                "right→wrong",
                "wrong→right",
                "p",
                "",
            ],
            rows,
        )
    )
    lines.append("")
    if comparison.sealed:
        lines.append(
            f"flips: {len(comparison.right_to_wrong)} right→wrong, "
            f"{len(comparison.wrong_to_right)} wrong→right (sealed holdout: cases not listed)"
        )
    else:
        lines.append(
            "right→wrong: " + (", ".join(f"#{c}" for c in comparison.right_to_wrong) or "none")
        )
        lines.append(
            "wrong→right: " + (", ".join(f"#{c}" for c in comparison.wrong_to_right) or "none")
        )
    return "\n".join(lines)


def model_report(rows: list[ModelRow], *, threshold: float) -> str:
    body = []
    for row in rows:
        marks = [
            m
            for m, on in (("best", row.best), ("cheapest", row.cheapest), ("fastest", row.fastest))
            if on
        ]
        if row.worse_than_best:
            marks.append("significantly worse")
        body.append(
            [
                row.run.route,
                str(row.run.pk),
                pct(row.accuracy),
                interval(row.low, row.high),
                "—" if row.best else p_value(row.p_vs_best),
                "unknown" if row.cost_per_case is None else f"${row.cost_per_case:.6f}",
                ms(row.p50_ms),
                ms(row.p95_ms),
                ", ".join(marks),
            ]
        )
    return (
        "Models on the same cases; cheapest and fastest are picked among those not significantly "
        f"worse than the best (exact McNemar p < {threshold:g}):\n\n"
        + table(
            ["route", "run", "accuracy", "95% CI", "p vs best", "cost/call", "p50", "p95", ""],
            body,
        )
    )
