"""The rules engine: compile CEL conditions, keep them cached, evaluate them on a proposal.

Evaluation walks the enabled rules that apply to the action type in priority order:
1. a shadow rule is evaluated and traced, and never decides;
2. the first enforced rule that matches decides its outcome — except that `approve` on an
   irreversible action type counts only from a rule with `allows_irreversible` (else: review);
3. an enforced rule that fails (bad field, wrong type, a stats error) or a spent time budget
   stops the walk with `review`: rules fail closed;
4. no enforced match: `review`.

Compiled programs are cached per process. On PostgreSQL a trigger on the rules table sends
NOTIFY gatehouse_rules when any rule changes (delivered at commit); each process LISTENs on its
own connection from a small thread and reloads on the next proposal after a notification, so the
submit path asks the database nothing about rules. While that listener is not connected (start,
lost connection, SQLite), every evaluation compares a generation read from the database (count
and highest id of rule versions, one index-only query) instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cel
from django.conf import settings
from django.db import connection
from django.db.models import Count, Max
from django.utils import timezone

from approvals import celcheck, celcost, celmatch, conditions, velocity
from approvals.conditions import RuleCompileError, compile_with_cost
from approvals.conditions import compile_condition as compile_condition  # where callers look
from approvals.models import ActionType, Proposal, Rule, RuleVersion, Service
from approvals.ruledef import RuleDefinition

# The reason of every proposal no rule decided (insights/gate.py reuses it, so that an audit
# sample reads exactly like any other such proposal).
NO_MATCH_REASON = "No rule decided; a reviewer decides."


@dataclass(frozen=True)
class AutoDecision:
    """What the automatic decision on a proposal came to, with the trace of how."""

    outcome: str  # "approve" | "review" | "reject"
    reason: str
    rule: str = ""
    rule_version: int | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    # A rule may ask for more reviewer approvals than the action type's (never fewer).
    approvals_required: int | None = None


class RuleSpec(RuleDefinition):
    """A rule as the engine sees it: its definition, the id of the action type it applies to
    (None: every type) and its version (None: an unsaved draft)."""

    action_type_id: int | None = None
    version: int | None = None

    @classmethod
    def of(cls, rule: Rule, **extra: Any) -> RuleSpec:
        """A stored rule (its action type loaded with it: select_related)."""
        return super().of(rule, action_type_id=rule.action_type_id, version=rule.version, **extra)

    @classmethod
    def draft(cls, definition: RuleDefinition, *, version: int | None = None) -> RuleSpec:
        """An unsaved definition (validated), its action type looked up by key;
        ApplicationError when no such type exists."""
        action_type = definition.resolve_action_type()
        return cls.model_construct(
            **definition.attributes(),
            action_type_id=action_type.pk if action_type is not None else None,
            version=version,
        )


@dataclass(frozen=True)
class CompiledRule:
    spec: RuleSpec
    program: cel.Program
    uses_stats: bool
    cost: celcost.CostShape
    # The condition with its `matches` calls on anchored patterns rewritten (approvals/celmatch.py),
    # or None; evaluated first, the original deciding whenever it raises.
    fast: cel.Program | None = None
    # Its stats calls with literal arguments, (method, first argument, window): read ahead with
    # the lock (approvals/decisions.py).
    stats_calls: frozenset[tuple[str, str, str]] = frozenset()
    # The trace entry of the common case, built once: entries are only serialised, never changed.
    no_match: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "no_match", _entry(self.spec, "no_match"))

    def applies_to(self, action_type_id: int) -> bool:
        return self.spec.action_type_id in (None, action_type_id)


def compile_rule(spec: RuleSpec) -> CompiledRule:
    program, cost = compile_with_cost(spec.when)
    uses_stats = "stats" in program.variables()
    fast = None
    # A rule that reads velocity figures is left as written (its stats calls run once).
    rewritten = None if uses_stats else celmatch.rewrite(spec.when)
    if rewritten is not None:
        try:
            fast = cel.compile(rewritten)
        except (ValueError, RuntimeError):
            fast = None
    stats_calls = celcheck.stats_calls(spec.when) if uses_stats else frozenset()
    return CompiledRule(
        spec=spec,
        program=program,
        uses_stats=uses_stats,
        cost=cost,
        fast=fast,
        stats_calls=stats_calls,
    )


# --- the per-process cache ---------------------------------------------------------------------


@dataclass
class RuleSet:
    rules: list[CompiledRule]
    broken: list[tuple[RuleSpec, str]] = field(default_factory=list)
    _by_type: dict[int, list[CompiledRule]] = field(default_factory=dict)

    def for_action_type(self, action_type_id: int) -> list[CompiledRule]:
        found = self._by_type.get(action_type_id)
        if found is None:
            found = [r for r in self.rules if r.applies_to(action_type_id)]
            self._by_type[action_type_id] = found
        return found

    def uses_stats(self, action_type_id: int) -> bool:
        return any(r.uses_stats for r in self.for_action_type(action_type_id))


_lock = threading.Lock()
_cached: tuple[tuple[int, int | None], RuleSet] | None = None
log = logging.getLogger(__name__)
CHANNEL = "gatehouse_rules"


def _generation() -> tuple[int, int | None]:
    row = RuleVersion.objects.aggregate(n=Count("id"), top=Max("id"))
    return row["n"], row["top"]


class _Listener:
    """LISTEN gatehouse_rules on a dedicated connection; `fresh` while nothing has changed."""

    def __init__(self) -> None:
        self.pid = 0
        self.connected = False
        self.changed = True
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def ensure_started(self) -> None:
        if self.pid == os.getpid() and self.thread is not None:
            return
        with _lock:
            if self.pid == os.getpid() and self.thread is not None:
                return
            # A forked child inherits no thread: start its own.
            self.pid, self.connected, self.changed = os.getpid(), False, True
            self.stopping = threading.Event()
            params = {
                "dbname": connection.settings_dict["NAME"],
                "user": connection.settings_dict["USER"] or None,
                "password": connection.settings_dict["PASSWORD"] or None,
                "host": connection.settings_dict["HOST"] or None,
                "port": connection.settings_dict["PORT"] or None,
            }
            self.thread = threading.Thread(
                target=self._run,
                args=(params, self.stopping),
                name="gatehouse-rules-listener",
                daemon=True,
            )
            self.thread.start()

    def _run(self, params: dict[str, Any], stopping: threading.Event) -> None:
        import psycopg

        while not stopping.is_set():
            try:
                with psycopg.connect(
                    **{k: v for k, v in params.items() if v}, autocommit=True, connect_timeout=5
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Anything may have changed while not listening.
                    self.changed, self.connected = True, True
                    while not stopping.is_set():
                        for _ in conn.notifies(timeout=2):
                            self.changed = True
                        conn.execute("SELECT 1")  # notice a dead connection
            except Exception as exc:
                log.warning("rules listener lost its connection (%s); checking per request", exc)
            self.connected, self.changed = False, True
            stopping.wait(1)

    def stop(self) -> None:
        """Close the listening connection (tests do, before dropping their database)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.thread, self.pid, self.connected = None, 0, False

    def fresh(self) -> bool:
        return self.connected and not self.changed and self.pid == os.getpid()


_listener = _Listener()


def invalidate() -> None:
    """Forget the cached rules in this process (other processes hear it from the database)."""
    global _cached
    _listener.changed = True
    _cached = None


def sort_rules(rules: Iterable[CompiledRule]) -> list[CompiledRule]:
    return sorted(rules, key=lambda r: (r.spec.priority, r.spec.name))


def load_ruleset() -> RuleSet:
    """The enabled rules, compiled, from the database (bypassing the cache)."""
    compiled, broken = [], []
    for rule in Rule.objects.filter(enabled=True).select_related("action_type"):
        spec = RuleSpec.of(rule)
        try:
            compiled.append(compile_rule(spec))
        except RuleCompileError as exc:
            # Saved rules were checked at save time; a library upgrade could still refuse one.
            # It then fails closed like an evaluation error (see evaluate).
            broken.append((spec, str(exc)))
    return RuleSet(rules=sort_rules(compiled), broken=broken)


def current_ruleset() -> RuleSet:
    global _cached
    if connection.vendor == "postgresql" and getattr(settings, "RULES_LISTEN", True):
        _listener.ensure_started()
        cached = _cached
        if cached is not None and _listener.fresh():
            return cached[1]
        if _listener.connected:
            # Told of a change (by any path, even raw SQL): reload. The flag is cleared before
            # reading, so a change committed meanwhile marks it again.
            # Other threads of this process reload too rather than serve the old rules.
            _listener.changed, _cached = False, None
            generation, ruleset = _generation(), load_ruleset()
            with _lock:
                _cached = (generation, ruleset)
            return ruleset
    generation = _generation()
    cached = _cached
    if cached is not None and cached[0] == generation:
        return cached[1]
    ruleset = load_ruleset()
    with _lock:
        _cached = (generation, ruleset)
    return ruleset


# --- evaluation ----------------------------------------------------------------------------


def _json_numbers_as_doubles(value: Any, extent: celcost.Extent) -> Any:
    # CEL maps JSON numbers to double, so `payload.amount * 2.0` works whether the service sent
    # 30 or 30.0 (booleans stay booleans). The same walk measures the payload for the cost bound.
    if isinstance(value, dict):
        extent.longest_collection = max(extent.longest_collection, len(value))
        for k in value:
            extent.longest_string = max(extent.longest_string, len(k))
        return {k: _json_numbers_as_doubles(v, extent) for k, v in value.items()}
    if isinstance(value, list):
        extent.longest_collection = max(extent.longest_collection, len(value))
        return [_json_numbers_as_doubles(v, extent) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        extent.longest_string = max(extent.longest_string, len(value))
    return value


def _stats_functions(
    *,
    service_id: int,
    action_type_id: int,
    as_of: datetime,
    sums: Mapping[tuple[str, str], float] | None = None,
) -> dict[str, Callable[..., Any]]:
    memo: dict[tuple[Any, ...], Any] = {
        ("sum", field_path, window): total for (field_path, window), total in (sums or {}).items()
    }

    def remembered(key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    def count(target: Any, outcome: str, window: str) -> int:
        return int(
            remembered(
                ("count", outcome, window),
                lambda: velocity.count(
                    service_id=service_id,
                    action_type_id=action_type_id,
                    outcome=outcome,
                    window=window,
                    as_of=as_of,
                ),
            )
        )

    def approved_sum(target: Any, field_path: str, window: str) -> float:
        return float(
            remembered(
                ("sum", field_path, window),
                lambda: velocity.approved_sum(
                    service_id=service_id,
                    action_type_id=action_type_id,
                    field_path=field_path,
                    window=window,
                    as_of=as_of,
                ),
            )
        )

    return {"count": count, "approved_sum": approved_sum}


def build_context(
    *,
    proposal: Proposal,
    service: Service,
    action_type: ActionType,
    payload: Any,
    now: datetime,
    stats_as_of: datetime | None = None,
    with_stats: bool = True,
    extent: celcost.Extent | None = None,
    sums: Mapping[tuple[str, str], float] | None = None,
) -> cel.Context:
    context = cel.Context(
        {
            "confidence": float(proposal.confidence),
            "payload": _json_numbers_as_doubles(payload, extent or celcost.Extent()),
            "action": {
                "type": action_type.key,
                "irreversible": action_type.irreversible,
                "risk": action_type.risk,
            },
            "service": service.name,
            "model": proposal.model,
            "feature": proposal.feature,
            "prompt_version": proposal.prompt_version,
            "now": now,
            "stats": {"kind": "stats"},
        }
    )
    if with_stats:
        functions = _stats_functions(
            service_id=service.pk,
            action_type_id=action_type.pk,
            as_of=stats_as_of or now,
            sums=sums,
        )
        for name, fn in functions.items():
            context.add_function(name, fn)
    return context


def evaluate(
    *,
    proposal: Proposal,
    service: Service,
    action_type: ActionType,
    rules: list[CompiledRule],
    broken: Iterable[tuple[RuleSpec, str]] = (),
    payload: Any = None,
    now: datetime | None = None,
    stats_as_of: datetime | None = None,
    time_budget: float | None = None,
    sums: Mapping[tuple[str, str], float] | None = None,
) -> AutoDecision:
    """Decide a proposal by `rules` (already filtered to its action type, in priority order).

    `sums`: `stats.approved_sum` figures already read, by (field_path, window)
    (velocity.lock_and_sum); the rules read any other figure themselves."""
    started = time.perf_counter()
    budget = conditions.time_budget() if time_budget is None else time_budget
    now = now or timezone.now()
    trace: list[dict[str, Any]] = []
    for spec, message in broken:
        if spec.action_type_id in (None, action_type.pk) and spec.mode == "enforce":
            trace.append(_entry(spec, "error", error=f"does not compile: {message}"))
            return AutoDecision(
                outcome="review",
                reason=f"Rule {spec.name} could not be compiled; a reviewer decides.",
                trace=trace,
            )
    extent = celcost.Extent()
    try:
        context = build_context(
            proposal=proposal,
            service=service,
            action_type=action_type,
            payload=proposal.payload if payload is None else payload,
            now=now,
            stats_as_of=stats_as_of,
            with_stats=any(r.uses_stats for r in rules),
            extent=extent,
            sums=sums,
        )
        context.add_function(celmatch.FUNCTION, celmatch.matches)
    except Exception as exc:  # a payload the library cannot take (too deep, …) fails closed
        return AutoDecision(
            outcome="review",
            reason="The rules could not read this proposal; a reviewer decides.",
            trace=[
                {"rule": "(context)", "version": None, "result": "error", "error": str(exc)[:500]}
            ],
        )
    decision: AutoDecision | None = None
    # Saved conditions fit the budget on a payload this small: no bound to compute per rule.
    small = extent.within_reference
    for rule in rules:
        spec = rule.spec
        if decision is not None and spec.mode == "enforce":
            continue  # decided; only shadow rules still run, for their trace
        left = budget - (time.perf_counter() - started)
        if left < 0:
            trace.append(_entry(spec, "error", error="time budget exceeded"))
            if decision is None:
                decision = AutoDecision(
                    outcome="review",
                    reason="The rules ran out of time; a reviewer decides.",
                    trace=trace,
                )
            break
        # The evaluator cannot be stopped once it runs: a rule that could outlast the budget on
        # this payload is not run at all (celcost).
        bound = rule.cost.reference_ns if small else extent.bound(rule.cost)
        if bound / 1e9 > left:
            trace.append(
                _entry(
                    spec,
                    "error",
                    error=f"not run: could take up to {bound / 1e6:,.0f} ms on this payload "
                    f"(largest list or map: {extent.longest_collection} items), over the "
                    "time budget",
                )
            )
            reason = f"Rule {spec.name} is too costly for this payload; a reviewer decides."
            decision = _fail_closed(spec, trace, reason) or decision
            continue
        try:
            if rule.fast is None:
                result = rule.program.execute(context)
            else:
                try:
                    result = rule.fast.execute(context)
                except Exception:
                    # The rewritten call could not answer: the original decides (its result or
                    # its error, as if it had run alone).
                    result = rule.program.execute(context)
        except Exception as exc:  # any library or stats error fails closed
            trace.append(_entry(spec, "error", error=str(exc)[:500]))
            reason = f"Rule {spec.name} failed to evaluate; a reviewer decides."
            decision = _fail_closed(spec, trace, reason) or decision
            continue
        if not isinstance(result, bool):
            trace.append(
                _entry(spec, "error", error=f"the condition gave {type(result).__name__}, not bool")
            )
            reason = f"Rule {spec.name} did not give true or false; a reviewer decides."
            decision = _fail_closed(spec, trace, reason) or decision
            continue
        if not result:
            trace.append(rule.no_match)
            continue
        if spec.mode != "enforce":
            trace.append(_entry(spec, "matched", outcome=spec.outcome))
            continue
        outcome, reason = spec.outcome, spec.reason or f"Rule {spec.name}"
        note = ""
        if outcome == "approve" and action_type.irreversible and not spec.allows_irreversible:
            outcome = "review"
            note = "approve needs allows_irreversible on an irreversible action type"
            reason = f"{reason} (irreversible action: a reviewer decides)"
        entry = _entry(spec, "matched", outcome=outcome, note=note)
        approvals = spec.approvals_required if outcome == "review" else 1
        if approvals > 1:
            entry["approvals_required"] = approvals
        trace.append(entry)
        decision = AutoDecision(
            outcome=outcome,
            reason=reason,
            rule=spec.name,
            rule_version=spec.version,
            trace=trace,
            approvals_required=approvals if approvals > 1 else None,
        )
    if decision is None:
        decision = AutoDecision(outcome="review", reason=NO_MATCH_REASON, trace=trace)
    return decision


def _fail_closed(spec: RuleSpec, trace: list[dict[str, Any]], reason: str) -> AutoDecision | None:
    """An enforced rule that cannot decide stops the walk with review; a shadow one only
    leaves its trace entry (None)."""
    if spec.mode != "enforce":
        return None
    return AutoDecision(
        outcome="review", reason=reason, rule=spec.name, rule_version=spec.version, trace=trace
    )


def _entry(
    spec: RuleSpec, result: str, *, outcome: str = "", error: str = "", note: str = ""
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "rule": spec.name,
        "version": spec.version,
        "mode": spec.mode,
        "result": result,
    }
    if outcome:
        entry["outcome"] = outcome
    if error:
        entry["error"] = error
    if note:
        entry["note"] = note
    return entry
