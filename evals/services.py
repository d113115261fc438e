"""Eval sets, cases, prompts and runs: every write goes through here."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from approvals.models import Proposal
from evals import scorers, stats
from evals.models import (
    EvalCase,
    EvalResult,
    EvalRun,
    EvalSet,
    Prompt,
    PromptLabel,
    PromptLabelMove,
    PromptVersion,
    Split,
)
from foundation import jsonvalues
from foundation.errors import ApplicationError, Conflict

# --- eval sets -----------------------------------------------------------------------------------


def eval_set_upsert(
    *,
    name: str,
    feature: str = "",
    description: str = "",
    scorer: str = "exact",
    scorer_config: dict[str, Any] | None = None,
) -> tuple[EvalSet, str]:
    """Create or update a set's settings (never its cases). Returns the set and what happened."""
    config = scorer_config or {}
    try:
        scorers.check_config(scorer, config)
    except scorers.ScorerConfigError as exc:
        raise ApplicationError(f"eval set {name}: {exc}", code="bad-scorer") from None
    values = {
        "feature": feature,
        "description": description,
        "scorer": scorer,
        "scorer_config": config,
    }
    with transaction.atomic():
        eval_set = EvalSet.objects.select_for_update().filter(name=name).first()
        if eval_set is None:
            return EvalSet.objects.create(name=name, **values), "created"
        changed = [k for k, v in values.items() if getattr(eval_set, k) != v]
        if not changed:
            return eval_set, "unchanged"
        for key in changed:
            setattr(eval_set, key, values[key])
        eval_set.save(update_fields=changed)
        return eval_set, "updated (" + ", ".join(changed) + ")"


def holdout_seal(*, eval_set: EvalSet) -> EvalSet:
    """Freeze the holdout split for good: no edits, no case-by-case views, only aggregates."""
    EvalSet.objects.filter(pk=eval_set.pk, holdout_sealed_at__isnull=True).update(
        holdout_sealed_at=timezone.now()
    )
    eval_set.refresh_from_db()
    return eval_set


# --- cases ---------------------------------------------------------------------------------------


def case_fingerprint(*, input: Any, ideal: Any) -> str:
    canonical = json.dumps(
        [input, ideal], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


_ROLES = {"system", "user", "assistant", "tool", "developer"}


def _check_case(data: Any) -> str | None:
    """What is wrong with one imported case, or None."""
    if not isinstance(data, dict):
        return "a case must be a JSON object"
    unknown = sorted(set(data) - {"input", "ideal", "tags", "split"})
    if unknown:
        return f"unknown keys: {', '.join(unknown)}"
    if "input" not in data or "ideal" not in data:
        return 'a case needs "input" and "ideal"'
    problem = _check_input(data["input"])
    if problem:
        return problem
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        return '"tags" must be a list of non-empty strings'
    if data.get("split", "dev") not in Split.values:
        return '"split" must be "dev" or "holdout"'
    return None


def _check_input(value: Any) -> str | None:
    if isinstance(value, dict):
        return None
    if isinstance(value, list) and value:
        for message in value:
            if not (
                isinstance(message, dict)
                and message.get("role") in _ROLES
                and isinstance(message.get("content", ""), str | list | type(None))
            ):
                return '"input" messages need a role (system, user, assistant, tool) and content'
        return None
    return '"input" must be a list of chat messages or a mapping of template variables'


@dataclass
class ImportReport:
    created: int = 0
    skipped: int = 0  # identical cases already in the set
    by_split: dict[str, int] = field(default_factory=dict)


def _not_a_number(name: str) -> float:
    raise jsonvalues.BadValue((), f"{name} is not a JSON number")


def cases_import(*, eval_set: EvalSet, lines: Iterable[str]) -> ImportReport:
    """Import JSON Lines, all or nothing: any bad line refuses the whole file, naming each line."""
    problems: list[str] = []
    parsed: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line, parse_constant=_not_a_number)
            jsonvalues.check(data)  # NUL, lone surrogates, NaN: unstorable or not numbers
        except jsonvalues.BadValue as exc:
            problems.append(f"line {number}: {exc}")
            continue
        except ValueError as exc:
            problems.append(f"line {number}: not JSON: {exc}")
            continue
        problem = _check_case(data)
        if problem:
            problems.append(f"line {number}: {problem}")
        elif data.get("split") == Split.HOLDOUT and eval_set.is_sealed:
            problems.append(f"line {number}: the holdout of {eval_set.name} is sealed")
        else:
            parsed.append(data)
    if problems:
        raise ApplicationError(
            f"{len(problems)} bad line(s); nothing was imported.",
            code="bad-cases",
            errors=[{"loc": ["file"], "msg": p} for p in problems],
        )
    report = ImportReport()
    with transaction.atomic():
        known = set(eval_set.cases.values_list("fingerprint", flat=True))
        new: list[EvalCase] = []
        for data in parsed:
            fingerprint = case_fingerprint(input=data["input"], ideal=data["ideal"])
            if fingerprint in known:
                report.skipped += 1
                continue
            known.add(fingerprint)
            split = data.get("split", Split.DEV)
            new.append(
                EvalCase(
                    eval_set=eval_set,
                    input=data["input"],
                    ideal=data["ideal"],
                    tags=list(dict.fromkeys(data.get("tags", []))),
                    split=split,
                    source=EvalCase.Source.IMPORTED,
                    fingerprint=fingerprint,
                )
            )
            report.by_split[split] = report.by_split.get(split, 0) + 1
        EvalCase.objects.bulk_create(new)
        report.created = len(new)
    return report


def case_check(
    *,
    eval_set: EvalSet,
    input: Any,
    ideal: Any,
    tags: list[str],
    split: str,
    case: EvalCase | None = None,
) -> str:
    """Raise unless this case may be stored (as new, or as the new content of `case`);
    returns its fingerprint."""
    problem = _check_case({"input": input, "ideal": ideal, "tags": tags, "split": split})
    if problem:
        raise ApplicationError(problem, code="bad-case")
    if case is not None:
        _refuse_if_sealed(case, moving_to=split)
    elif split == Split.HOLDOUT and eval_set.is_sealed:
        raise Conflict(f"The holdout of {eval_set.name} is sealed.", code="holdout-sealed")
    fingerprint = case_fingerprint(input=input, ideal=ideal)
    others = eval_set.cases.filter(fingerprint=fingerprint)
    if case is not None:
        others = others.exclude(pk=case.pk)
    if others.exists():
        raise ApplicationError("The set has this case already.", code="duplicate-case")
    return fingerprint


def case_add(
    *, eval_set: EvalSet, input: Any, ideal: Any, tags: list[str] | None = None, split: str = "dev"
) -> EvalCase:
    """Add one case (the admin's way in); a sealed holdout takes no new cases."""
    tags = list(dict.fromkeys(tags or []))
    fingerprint = case_check(eval_set=eval_set, input=input, ideal=ideal, tags=tags, split=split)
    return EvalCase.objects.create(
        eval_set=eval_set,
        input=input,
        ideal=ideal,
        tags=tags,
        split=split,
        fingerprint=fingerprint,
    )


def _rule_of(proposal: Proposal) -> str:
    """The rule that decided or routed the proposal: its decision rule, else the enforcing rule
    that matched in the trace (entries like {"rule", "mode", "result": "matched"}); shadow rules
    never decide, so they never name a case's rule."""
    if proposal.decision_rule:
        return proposal.decision_rule
    for step in proposal.rule_trace or []:
        if not isinstance(step, dict) or not step.get("rule"):
            continue
        matched = step.get("result") == "matched" or step.get("matched") is True
        if matched and step.get("mode", "enforce") == "enforce":
            return str(step["rule"])
    return ""


def _holdout_pick(proposal_id: Any, fraction: float) -> bool:
    # Deterministic: the same proposal lands in the same split on every harvest.
    digest = hashlib.sha256(str(proposal_id).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


@dataclass
class HarvestReport:
    created: int = 0
    skipped: int = 0  # harvested before, or identical to an existing case
    without_call: int = 0  # decided by a reviewer but its model call is not in the log
    by_split: dict[str, int] = field(default_factory=dict)


def cases_harvest(
    *,
    eval_set: EvalSet,
    action_types: list[str] | None = None,
    holdout_fraction: float = 0.0,
    limit: int | None = None,
) -> HarvestReport:
    """Turn proposals a reviewer decided into cases.

    The linked model call's messages are the input. The expected output is the human's answer:
    {"verdict": approve|reject, "action_type": key, "payload": the approved payload, corrected
    by the reviewer's edit if there was one}. Tags: the action type and `rule:<name>`.
    """
    from llmcalls.models import LLMCall

    if not 0 <= holdout_fraction < 1:
        raise ApplicationError("holdout fraction must be within [0, 1).", code="bad-fraction")
    proposals = (
        Proposal.objects.filter(
            decided_by=Proposal.DecidedBy.REVIEWER,
            decision_outcome__in=["approve", "reject"],
            llm_call_id__isnull=False,
        )
        .exclude(eval_cases__eval_set=eval_set)
        .select_related("action_type", "service")
        .order_by("decided_at", "id")
    )
    if action_types:
        proposals = proposals.filter(action_type__key__in=action_types)
    if limit:
        proposals = proposals[:limit]
    report = HarvestReport()
    with transaction.atomic():
        candidates = list(proposals)
        calls = LLMCall.objects.in_bulk([p.llm_call_id for p in candidates])
        known = set(eval_set.cases.values_list("fingerprint", flat=True))
        new: list[EvalCase] = []
        for proposal in candidates:
            call = calls.get(proposal.llm_call_id)
            # Only the proposal's own service's call: a link stored before links were checked
            # could name another tenant's prompt.
            if call is None or call.service != proposal.service.name or not call.messages:
                report.without_call += 1
                continue
            ideal = {
                "verdict": proposal.decision_outcome,
                "action_type": proposal.action_type.key,
                "payload": proposal.effective_payload,
            }
            fingerprint = case_fingerprint(input=call.messages, ideal=ideal)
            if fingerprint in known:
                report.skipped += 1
                continue
            known.add(fingerprint)
            rule = _rule_of(proposal)
            tags = [proposal.action_type.key] + ([f"rule:{rule}"] if rule else [])
            if proposal.final_payload is not None:
                tags.append("edited")
            holdout = not eval_set.is_sealed and _holdout_pick(proposal.pk, holdout_fraction)
            split = Split.HOLDOUT if holdout else Split.DEV
            new.append(
                EvalCase(
                    eval_set=eval_set,
                    input=call.messages,
                    ideal=ideal,
                    tags=tags,
                    split=split,
                    source=EvalCase.Source.HARVESTED,
                    proposal=proposal,
                    fingerprint=fingerprint,
                )
            )
            report.by_split[split] = report.by_split.get(split, 0) + 1
        EvalCase.objects.bulk_create(new)
        report.created = len(new)
    return report


def _refuse_if_sealed(case: EvalCase, *, moving_to: str | None = None) -> None:
    sealed = case.eval_set.is_sealed
    if sealed and (case.split == Split.HOLDOUT or moving_to == Split.HOLDOUT):
        raise Conflict(
            f"The holdout of {case.eval_set.name} is sealed: its cases cannot change.",
            code="holdout-sealed",
        )


def case_update(
    *,
    case: EvalCase,
    input: Any = None,
    ideal: Any = None,
    tags: list[str] | None = None,
    split: str | None = None,
) -> EvalCase:
    """Edit a case; refused for a case in a sealed holdout (and for moving one into it)."""
    with transaction.atomic():
        case = EvalCase.objects.select_for_update().select_related("eval_set").get(pk=case.pk)
        new_input = case.input if input is None else input
        new_ideal = case.ideal if ideal is None else ideal
        new_tags = case.tags if tags is None else list(dict.fromkeys(tags))
        new_split = split or case.split
        case.fingerprint = case_check(
            eval_set=case.eval_set,
            input=new_input,
            ideal=new_ideal,
            tags=new_tags,
            split=new_split,
            case=case,
        )
        case.input, case.ideal, case.tags, case.split = new_input, new_ideal, new_tags, new_split
        case.save()
    return case


def case_delete(*, case: EvalCase) -> None:
    with transaction.atomic():
        case = EvalCase.objects.select_for_update().select_related("eval_set").get(pk=case.pk)
        _refuse_if_sealed(case)
        case.delete()


# --- prompts -------------------------------------------------------------------------------------


def _template_messages(template: Any) -> list[dict[str, str]]:
    """A template as stored: a string is one user message; a list is chat messages."""
    if isinstance(template, str):
        return [{"role": "user", "content": template}]
    if (
        isinstance(template, list)
        and template
        and all(
            isinstance(m, dict)
            and m.get("role") in _ROLES
            and isinstance(m.get("content"), str)
            and set(m) <= {"role", "content"}
            for m in template
        )
    ):
        return [{"role": m["role"], "content": m["content"]} for m in template]
    raise ApplicationError(
        "A prompt template is a string or a list of {role, content} messages.",
        code="bad-template",
    )


def prompt_template_check(*, template: Any) -> None:
    _template_messages(template)


@transaction.atomic
def prompt_version_create(
    *,
    name: str,
    template: Any,
    route: str,
    params: dict[str, Any] | None = None,
    version: int | None = None,
    labels: Iterable[str] = (),
    actor: str = "",
) -> tuple[PromptVersion, str]:
    """Add a version (the next number unless given). Versions never change: declaring an
    existing number again is fine only with identical content. Listed labels move to it."""
    messages = _template_messages(template)
    prompt, _ = Prompt.objects.select_for_update().get_or_create(name=name)
    existing = prompt.versions.filter(version=version).first() if version else None
    if existing is not None:
        if (existing.template, existing.route, existing.params) != (
            messages,
            route,
            params or {},
        ):
            raise Conflict(
                f"{name}@{version} exists with other content; prompt versions are immutable, "
                f"declare version {_next_version(prompt)} instead.",
                code="prompt-version-immutable",
            )
        outcome = "unchanged"
        prompt_version = existing
    else:
        prompt_version = PromptVersion.objects.create(
            prompt=prompt,
            version=version or _next_version(prompt),
            template=messages,
            route=route,
            params=params or {},
        )
        outcome = "created"
    moved = [
        label
        for label in labels
        if prompt_label_move(prompt=prompt, label=label, version=prompt_version, actor=actor)
    ]
    if moved:
        outcome += f" (labels moved: {', '.join(moved)})"
    return prompt_version, outcome


def _next_version(prompt: Prompt) -> int:
    return (prompt.versions.order_by("-version").values_list("version", flat=True).first() or 0) + 1


_LABEL = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@transaction.atomic
def prompt_label_move(
    *, prompt: Prompt, label: str, version: PromptVersion, actor: str = ""
) -> bool:
    """Point `label` at `version`; returns whether it moved. Every move is kept in history."""
    if not _LABEL.match(label) or label.isdigit():
        raise ApplicationError(
            f"Bad label {label!r}: lowercase letters, digits, - and _, not a number.",
            code="bad-label",
        )
    if version.prompt_id != prompt.pk:
        raise ApplicationError(f"{version} is not a version of {prompt.name}.", code="bad-label")
    current = PromptLabel.objects.select_for_update().filter(prompt=prompt, name=label).first()
    if current is not None and current.version_id == version.pk:
        return False
    before = current.version.version if current is not None else None
    PromptLabel.objects.update_or_create(
        prompt=prompt, name=label, defaults={"version": version, "updated_at": timezone.now()}
    )
    PromptLabelMove.objects.create(
        prompt=prompt,
        label=label,
        from_version=before,
        to_version=version.version,
        actor=actor,
    )
    return True


def prompt_resolve(*, ref: str) -> PromptVersion:
    """`name@3`, `name@production`, or `name` (its production label)."""
    name, _, which = ref.partition("@")
    which = which or "production"
    prompt = Prompt.objects.filter(name=name).first()
    if prompt is None:
        raise ApplicationError(f"No prompt named {name!r}.", status=404, code="unknown-prompt")
    if which.isdigit():
        version = prompt.versions.filter(version=int(which)).first()
    else:
        label = prompt.labels.select_related("version").filter(name=which).first()
        version = label.version if label else None
    if version is None:
        raise ApplicationError(
            f"{name} has no version or label {which!r}.", status=404, code="unknown-prompt"
        )
    return version


_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render_messages(*, version: PromptVersion, case_input: Any) -> list[dict[str, Any]]:
    """The messages sent for one case.

    Variables (a mapping) fill `{{name}}` (or `{{name.field}}`) in the template; a missing
    variable is an error, never an empty string. Messages (a list, e.g. a harvested call) are
    sent as they are, except that the version's system messages replace the recorded ones — so
    a new prompt is measured on real conversations.
    """
    template = version.template
    if isinstance(case_input, dict):

        def fill(match: re.Match[str]) -> str:
            value = scorers.dig(case_input, match.group(1))
            if value is scorers._MISSING:
                raise KeyError(match.group(1))
            return _value_text(value)

        try:
            return [
                {"role": m["role"], "content": _VARIABLE.sub(fill, m["content"])} for m in template
            ]
        except KeyError as exc:
            raise ApplicationError(
                f"the case has no variable {exc.args[0]!r}", code="missing-variable"
            ) from None
    system = [m for m in template if m["role"] in ("system", "developer")]
    if not system:
        return list(case_input)
    return system + [m for m in case_input if m.get("role") not in ("system", "developer")]


# --- runs ----------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    case_id: int
    attempt: int
    output: str = ""
    score: float = 0.0
    passed: bool = False
    detail: str = ""
    error: str = ""
    latency_ms: float | None = None
    cost_usd: Decimal | None = None
    llm_call_id: Any = None
    grader_call_id: Any = None
    budget_exceeded: bool = False


def _output_text(completion: Any) -> str:
    if completion.text:
        return str(completion.text)
    if completion.tool_calls:
        return json.dumps([c.get("function") for c in completion.tool_calls], ensure_ascii=False)
    return ""


def _attempt(
    *,
    case: EvalCase,
    attempt: int,
    version: PromptVersion,
    feature: str,
    route: str,
    scorer: str,
    scorer_config: dict[str, Any],
    stop: threading.Event,
) -> _Outcome:
    from llmcalls import client

    outcome = _Outcome(case_id=case.pk, attempt=attempt)
    try:
        if stop.is_set():
            outcome.error = "not run: the run stopped early (budget)"
            return outcome
        try:
            messages = render_messages(version=version, case_input=case.input)
        except ApplicationError as exc:
            outcome.error = exc.message
            return outcome
        started = time.monotonic()
        try:
            # Logged and budgeted as evals:<set>, so eval traffic never counts against (or hides
            # in) the production feature; `route` picks the models.
            completion = client.complete(
                feature=feature, route=route, messages=messages, service="evals", **version.params
            )
        except client.LLMError as exc:
            outcome.error = f"{type(exc).__name__}: {exc.message}"[:2000]
            outcome.llm_call_id = exc.call_id
            outcome.latency_ms = round((time.monotonic() - started) * 1000, 3)
            if isinstance(exc, client.BudgetExceeded):
                outcome.budget_exceeded = True
                stop.set()
            return outcome
        outcome.output = _output_text(completion)
        outcome.latency_ms = completion.latency_ms
        outcome.cost_usd = completion.cost_usd
        outcome.llm_call_id = completion.call_id
        result = scorers.score(
            name=scorer,
            config=scorer_config,
            output=outcome.output,
            ideal=case.ideal,
            case_input=case.input,
            tags=list(case.tags),
        )
        outcome.passed, outcome.score, outcome.detail = result.passed, result.value, result.detail
        outcome.grader_call_id = result.call_id
        return outcome
    finally:
        # Worker threads open their own connections (the call log); give them back.
        connections.close_all()


def _route_exists(route: str) -> bool:
    from llmcalls import routing

    config = routing.route_for(route)
    return config is not None and (config.feature == route or route == "default")


ProgressFn = Callable[[int, int], None]


def run_execute(
    *,
    eval_set: EvalSet,
    version: PromptVersion,
    route: str | None = None,
    split: str = Split.DEV,
    repeat: int = 1,
    baseline: EvalRun | None = None,
    concurrency: int | None = None,
    label: str = "",
    batch: Any = None,
    on_progress: ProgressFn | None = None,
) -> EvalRun:
    """Run every case of a split `repeat` times through llmcalls and store what came back.

    Calls run on `concurrency` threads (EVALS_CONCURRENCY by default); each one is an ordinary
    llmcalls call on `route`, logged under the feature `evals:<set>`, so the route's deadline,
    retries, fallbacks, circuit breaker and budget hold.
    When the route's budget refuses a call the remaining ones are not made and the run fails.
    """
    route = route or version.route
    if split not in Split.values:
        raise ApplicationError(f"Unknown split {split!r}.", code="bad-split")
    if repeat < 1:
        raise ApplicationError("repeat must be at least 1.", code="bad-repeat")
    if not _route_exists(route):
        raise ApplicationError(
            f"No llmcalls route {route!r}; declare it under llm_routes.", code="no-route"
        )
    if baseline is not None and (baseline.eval_set_id != eval_set.pk or baseline.split != split):
        raise ApplicationError(
            f"Run {baseline.pk} measured another set or split; it cannot be the baseline.",
            code="bad-baseline",
        )
    cases = list(eval_set.cases.filter(split=split).order_by("id"))
    if not cases:
        raise ApplicationError(f"{eval_set.name} has no {split} cases.", code="no-cases")
    workers = max(1, concurrency or settings.EVALS_CONCURRENCY)
    run_fields: dict[str, Any] = {"batch": batch} if batch else {}
    run = EvalRun.objects.create(
        eval_set=eval_set,
        prompt_version=version,
        route=route,
        split=split,
        repeat=repeat,
        scorer=eval_set.scorer,
        model_graded=eval_set.scorer == scorers.MODEL_GRADED,
        baseline=baseline,
        label=label,
        **run_fields,
    )
    stop = threading.Event()
    outcomes: list[_Outcome] = []
    total = len(cases) * repeat
    if on_progress:
        on_progress(0, total)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evals") as pool:
        futures = [
            pool.submit(
                _attempt,
                case=case,
                attempt=attempt,
                version=version,
                feature=f"evals:{eval_set.name}",
                route=route,
                scorer=eval_set.scorer,
                scorer_config=eval_set.scorer_config,
                stop=stop,
            )
            for attempt in range(repeat)
            for case in cases
        ]
        for future in as_completed(futures):
            outcomes.append(future.result())
            if on_progress:
                on_progress(len(outcomes), total)
    EvalResult.objects.bulk_create(
        [
            EvalResult(
                run=run,
                case_id=o.case_id,
                attempt=o.attempt,
                output=o.output,
                score=o.score,
                passed=o.passed,
                detail=o.detail,
                error=o.error,
                latency_ms=o.latency_ms,
                cost_usd=o.cost_usd,
                llm_call_id=o.llm_call_id,
                grader_call_id=o.grader_call_id,
            )
            for o in sorted(outcomes, key=lambda o: (o.case_id, o.attempt))
        ],
        batch_size=500,
    )
    return run_finish(
        run=run,
        failed="a call was refused: the route's daily budget is spent" if stop.is_set() else "",
    )


def run_finish(*, run: EvalRun, failed: str = "") -> EvalRun:
    """Compute and store the run's totals from its results."""
    cases = {c.pk: c for c in run.eval_set.cases.filter(split=run.split)}
    results = list(run.results.all())
    summary = summarize(results=results, tags_of={pk: list(c.tags) for pk, c in cases.items()})
    run.totals = summary
    run.n_cases = summary["total"]["n"]
    run.n_correct = summary["total"]["correct"]
    run.accuracy = summary["total"]["accuracy"]
    run.cost_usd = Decimal(summary["cost_usd"]) if summary["cost_usd"] is not None else None
    run.finished_at = timezone.now()
    run.status = EvalRun.Status.FAILED if failed else EvalRun.Status.FINISHED
    run.error = failed
    run.save()
    return run


def case_verdicts(results: Iterable[EvalResult]) -> dict[int, bool]:
    """Per case: right when most of its attempts passed (a tie is wrong)."""
    passes: dict[int, list[bool]] = {}
    for result in results:
        passes.setdefault(result.case_id, []).append(result.passed)
    return {case: sum(p) * 2 > len(p) for case, p in passes.items()}


def _cell(correct: int, n: int) -> dict[str, Any]:
    interval = stats.wilson(correct, n)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else None,
        "low": interval.low,
        "high": interval.high,
    }


def summarize(*, results: list[EvalResult], tags_of: dict[int, list[str]]) -> dict[str, Any]:
    verdicts = case_verdicts(results)
    by_case: dict[int, list[bool]] = {}
    for result in results:
        by_case.setdefault(result.case_id, []).append(result.passed)
    tags: dict[str, list[bool]] = {}
    for case_id, right in verdicts.items():
        for tag in tags_of.get(case_id, []):
            tags.setdefault(tag, []).append(right)
    latencies = [r.latency_ms for r in results if r.latency_ms is not None and not r.error]
    costs = [r.cost_usd for r in results if r.cost_usd is not None]
    unpriced = sum(1 for r in results if r.cost_usd is None and r.llm_call_id and not r.error)
    return {
        "total": _cell(sum(verdicts.values()), len(verdicts)),
        "tags": {tag: _cell(sum(v), len(v)) for tag, v in sorted(tags.items())},
        "attempts": len(results),
        "attempts_passed": sum(1 for r in results if r.passed),
        "flaky": sum(1 for p in by_case.values() if 0 < sum(p) < len(p)),
        "errors": sum(1 for r in results if r.error),
        "latency_p50_ms": stats.percentile(latencies, 50),
        "latency_p95_ms": stats.percentile(latencies, 95),
        "cost_usd": str(sum(costs, Decimal(0))) if costs or not results else None,
        "cost_unknown": unpriced,
    }
