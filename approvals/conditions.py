"""A rule's CEL condition: compiled, type-checked and its cost bounded before it is saved.

Beneath both the rule's definition (approvals/ruledef.py checks a condition where it is
written) and the engine (approvals/rules.py compiles what it evaluates), so neither imports the
other to check one.
"""

from __future__ import annotations

import cel
from django.conf import settings

from approvals import celcheck, celcost

MAX_CONDITION_LENGTH = 4000


class RuleCompileError(Exception):
    """A condition that cannot be saved; the message is the library's or the checker's."""


def time_budget() -> float:
    """Seconds all the rules of one proposal may take (RULES_TIME_BUDGET_MS)."""
    return float(getattr(settings, "RULES_TIME_BUDGET_MS", 100)) / 1000


def compile_condition(when: str) -> cel.Program:
    """Compile, type-check and bound the cost of a condition; raise RuleCompileError with a
    message for people."""
    return compile_with_cost(when)[0]


def compile_with_cost(when: str) -> tuple[cel.Program, celcost.CostShape]:
    if not when.strip():
        raise RuleCompileError("The condition is empty.")
    if len(when) > MAX_CONDITION_LENGTH:
        raise RuleCompileError(f"The condition is longer than {MAX_CONDITION_LENGTH} characters.")
    try:
        program = cel.compile(when)
    except (ValueError, RuntimeError) as exc:
        raise RuleCompileError(str(exc)) from None
    try:
        celcheck.check(when)
    except celcheck.CelTypeError as exc:
        raise RuleCompileError(f"Type check failed: {exc}") from None
    return program, _condition_cost(when)


def _condition_cost(when: str) -> celcost.CostShape:
    """The cost shape of a compiled condition; refused when even a small payload exceeds the
    time budget (see celcost)."""
    shape = celcost.shape(when)
    reference = shape.reference_ns
    if not shape.flat and reference / 1e9 > time_budget():
        raise RuleCompileError(
            f"The condition is too costly: comprehensions nested {shape.depth} deep would take "
            f"about {reference / 1e6:,.0f} ms on a payload with a {celcost.REFERENCE_ITEMS}-item list, "
            f"over the {time_budget() * 1000:g} ms budget (RULES_TIME_BUDGET_MS). "
            "Nest fewer comprehensions."
        )
    return shape
