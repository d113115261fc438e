"""`manage.py evals import|harvest|run|seal|label`.

Exit codes of `run`: 0 no significant regression, 1 a significant regression against the
baseline (the CI gate), 2 a usage error or a run that could not finish.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evals import report, selectors, services
from evals.models import EvalRun, EvalSet, Prompt
from foundation.errors import ApplicationError

EXIT_REGRESSION = 1
EXIT_USAGE = 2


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line per 10% otherwise."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        elapsed = time.monotonic() - self.started
        width = 30
        bar = "#" * int(fraction * width) + "." * (width - int(fraction * width))
        text = f"{self.label} [{bar}] {done}/{total} {elapsed:.1f}s"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done == total else ""))
            self.stream.flush()
        elif int(fraction * 10) != self.last_decile:
            self.last_decile = int(fraction * 10)
            self.stream.write(text + "\n")
            self.stream.flush()


class Command(BaseCommand):
    help = "Eval sets: import or harvest cases, run a prompt over them, seal the holdout."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)

        imp = sub.add_parser("import", help="import cases from JSON Lines")
        imp.add_argument("set")
        imp.add_argument("file", help="one case a line: {input, ideal, tags, split}; - for stdin")

        harvest = sub.add_parser("harvest", help="cases from proposals a reviewer decided")
        harvest.add_argument("set")
        harvest.add_argument("--action-type", action="append", default=[], dest="action_types")
        harvest.add_argument(
            "--holdout", type=float, default=0.0, help="fraction of new cases for the holdout"
        )
        harvest.add_argument("--limit", type=int, default=None)

        run = sub.add_parser("run", help="run a prompt over a split and report")
        run.add_argument("set")
        run.add_argument("--prompt", required=True, help="NAME@VERSION or NAME@LABEL")
        run.add_argument(
            "--model",
            action="append",
            default=[],
            dest="models",
            help="llmcalls route to call (repeat to compare routes); default: the prompt's",
        )
        run.add_argument("--split", choices=["dev", "holdout"], default="dev")
        run.add_argument("--repeat", type=int, default=1)
        run.add_argument("--baseline", help="a run id, or 'last'")
        run.add_argument("--max-regression-p", type=float, default=0.05)
        run.add_argument("--concurrency", type=int, default=None)
        run.add_argument("--label", default="", help="free text stored with the run (commit, job)")

        seal = sub.add_parser("seal", help="seal the holdout split (cannot be undone)")
        seal.add_argument("set")

        label = sub.add_parser("label", help="move a prompt label to a version")
        label.add_argument("prompt")
        label.add_argument("label")
        label.add_argument("version", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, "do_" + options["action"])(**options)
        except ApplicationError as exc:
            detail = "".join(f"\n  {e['msg']}" for e in exc.errors)
            raise CommandError(exc.message + detail, returncode=EXIT_USAGE) from None

    def _set(self, name: str) -> EvalSet:
        eval_set = EvalSet.objects.filter(name=name).first()
        if eval_set is None:
            raise CommandError(
                f"No eval set {name!r}; declare it under eval_sets and `manage.py apply`.",
                returncode=EXIT_USAGE,
            )
        return eval_set

    def do_import(self, **options: Any) -> None:
        eval_set = self._set(options["set"])
        path = options["file"]
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
        except OSError as exc:
            raise CommandError(
                f"cannot read {path}: {exc.strerror}", returncode=EXIT_USAGE
            ) from None
        result = services.cases_import(eval_set=eval_set, lines=text.splitlines())
        splits = ", ".join(f"{n} {s}" for s, n in sorted(result.by_split.items())) or "none"
        self.stdout.write(
            f"{eval_set.name}: {result.created} cases imported ({splits}), "
            f"{result.skipped} already present"
        )

    def do_harvest(self, **options: Any) -> None:
        eval_set = self._set(options["set"])
        result = services.cases_harvest(
            eval_set=eval_set,
            action_types=options["action_types"] or None,
            holdout_fraction=options["holdout"],
            limit=options["limit"],
        )
        splits = ", ".join(f"{n} {s}" for s, n in sorted(result.by_split.items())) or "none"
        self.stdout.write(
            f"{eval_set.name}: {result.created} cases harvested ({splits}), "
            f"{result.skipped} already present, {result.without_call} without a logged call"
        )

    def do_seal(self, **options: Any) -> None:
        eval_set = services.holdout_seal(eval_set=self._set(options["set"]))
        self.stdout.write(
            f"{eval_set.name}: holdout sealed at {eval_set.holdout_sealed_at:%Y-%m-%d %H:%M}"
        )

    def do_label(self, **options: Any) -> None:
        prompt = Prompt.objects.filter(name=options["prompt"]).first()
        version = prompt.versions.filter(version=options["version"]).first() if prompt else None
        if prompt is None or version is None:
            raise CommandError(
                f"No prompt {options['prompt']}@{options['version']}.", returncode=EXIT_USAGE
            )
        moved = services.prompt_label_move(
            prompt=prompt, label=options["label"], version=version, actor="cli"
        )
        self.stdout.write(
            f"{prompt.name}:{options['label']} → v{version.version}"
            + ("" if moved else " (already)")
        )

    def do_run(self, **options: Any) -> None:
        eval_set = self._set(options["set"])
        version = services.prompt_resolve(ref=options["prompt"])
        threshold = options["max_regression_p"]
        if not 0 < threshold < 1:
            raise CommandError("--max-regression-p must be within (0, 1)", returncode=EXIT_USAGE)
        routes = options["models"] or [version.route]
        baseline = self._baseline(eval_set, options["split"], options["baseline"])
        runs: list[EvalRun] = []
        batch = None
        for route in routes:
            run = services.run_execute(
                eval_set=eval_set,
                version=version,
                route=route,
                split=options["split"],
                repeat=options["repeat"],
                baseline=baseline,
                concurrency=options["concurrency"],
                label=options["label"],
                batch=batch,
                on_progress=Progress(
                    self.stderr._out,  # type: ignore[arg-type]
                    f"{route:>16}",
                ),
            )
            batch = run.batch
            runs.append(run)
            self.stdout.write(report.run_report(run) + "\n")
        if len(runs) > 1:
            self.stdout.write(
                report.model_report(
                    selectors.model_choice(runs=runs, threshold=threshold), threshold=threshold
                )
                + "\n"
            )
        regressed = []
        if baseline is not None:
            for run in runs:
                comparison = selectors.compare_runs(run=run, baseline=baseline, threshold=threshold)
                self.stdout.write(report.comparison_report(comparison) + "\n")
                regressed += [(run, t) for t in comparison.regressions]
        failed = [r for r in runs if r.status != EvalRun.Status.FINISHED]
        if regressed:
            names = ", ".join(
                f"{t.tag or 'total'} on {r.route} (p={report.p_value(t.p_value)})"
                for r, t in regressed
            )
            raise CommandError(f"significant regression: {names}", returncode=EXIT_REGRESSION)
        if failed:
            raise CommandError(
                "; ".join(f"run {r.pk} failed: {r.error}" for r in failed), returncode=EXIT_USAGE
            )

    def _baseline(self, eval_set: EvalSet, split: str, ref: str | None) -> EvalRun | None:
        if not ref:
            return None
        if ref == "last":
            run = selectors.last_finished_run(eval_set=eval_set, split=split)
            if run is None:
                self.stderr.write(f"no finished {split} run of {eval_set.name} yet: no baseline")
            return run
        if not ref.isdigit():
            raise CommandError("--baseline takes a run id or 'last'", returncode=EXIT_USAGE)
        run = EvalRun.objects.filter(pk=int(ref)).first()
        if run is None:
            raise CommandError(f"No run {ref}.", returncode=EXIT_USAGE)
        return run
