"""Compare the two maintained Python CEL libraries for Gatehouse rules: correctness and speed.

- `common-expression-language` (import cel): Python bindings over the Rust `cel` crate.
- `cel-python` (import celpy): a pure-Python interpreter over a Lark parser.

Correctness: a table of cases from the CEL language definition (cel-spec), each with the
value it must give or "error". Speed: compile time, and evaluating the same 20 rule-like
conditions against one proposal context (what Gatehouse does per proposal), p50 per condition.
The floor is a plain Python function computing the same 20 conditions, in the same run.

    .venv/bin/python bench/cel_libraries.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import cel
import celpy


class _Error:
    def __repr__(self) -> str:
        return "error"


ERROR: Any = _Error()

# (expression, expected) — expected per cel-spec (langdef.md and the conformance tests).
CASES: list[tuple[str, Any]] = [
    ("1 + 2 == 3", True),
    ("1 + 2.0", ERROR),  # no implicit numeric conversion in arithmetic
    ("1 == 1.0", True),  # heterogeneous numeric equality
    ("1 < 1.5", True),  # cross-type numeric ordering
    ("2u > 1", True),
    ("1u + 1", ERROR),
    ("9223372036854775807 + 1", ERROR),  # int64 overflow is an error
    ("1 / 0", ERROR),
    ("false && (1 / 0 == 1)", False),  # commutative error absorption
    ("(1 / 0 == 1) || true", True),
    ("'abc'.startsWith('a') && 'abc'.endsWith('c')", True),
    ("'abc'.matches('^a.c$')", True),
    ("size('héllo')", 5),  # code points, not bytes
    ("[1, 2, 3].exists(x, x > 2)", True),
    ("[1, 2, 3].all(x, x > 0)", True),
    ("[1, 2, 3].map(x, x * 2) == [2, 4, 6]", True),
    ("[1, 2, 3].filter(x, x > 1) == [2, 3]", True),
    ("{'a': 1}.a", 1),
    ("has({'a': 1}.b)", False),
    ("{'a': 1}.b", ERROR),  # missing key is an error, not null
    ("int('12') + 1", 13),
    ("double(1) == 1.0", True),
    ("'a' + 'b' == 'ab'", True),
    ("[1] + [2] == [1, 2]", True),
    ("1 in [1, 2]", True),
    ("'k' in {'k': 1}", True),
    (
        "timestamp('2024-01-01T00:00:00Z') + duration('1h') == timestamp('2024-01-01T01:00:00Z')",
        True,
    ),
    ("duration('90m') > duration('1h')", True),
    ("true ? 1 : 'x'", 1),
    ("!true == false", True),
]

CONTEXT: dict[str, Any] = {
    "confidence": 0.87,
    "payload": {"order_id": "ORD-48213", "amount": 42.5, "currency": "EUR", "reason": "late"},
    "action": {"type": "refund.issue", "irreversible": False, "risk": "medium"},
    "service": "shop",
    "model": "gpt-4o-mini",
    "feature": "support-refunds",
    "prompt_version": "refunds@7",
    "now": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
}

RULES = [
    f"payload.amount > {1000 + i}.0 && confidence < 0.5"
    if i % 4 == 0
    else f"payload.currency == 'GBP' && payload.amount > {i}.0"
    if i % 4 == 1
    else f"model.startsWith('legacy-{i}') || action.risk == 'high' && confidence < 0.3"
    if i % 4 == 2
    else f"payload.reason.contains('chargeback-{i}') && service != 'shop'"
    for i in range(20)
]


def _python_rule(i: int) -> Callable[[dict[str, Any]], bool]:
    def rule(c: dict[str, Any]) -> bool:
        if i % 4 == 0:
            return bool(c["payload"]["amount"] > 1000 + i and c["confidence"] < 0.5)
        if i % 4 == 1:
            return bool(c["payload"]["currency"] == "GBP" and c["payload"]["amount"] > i)
        if i % 4 == 2:
            return bool(
                c["model"].startswith(f"legacy-{i}")
                or (c["action"]["risk"] == "high" and c["confidence"] < 0.3)
            )
        return bool(f"chargeback-{i}" in c["payload"]["reason"] and c["service"] != "shop")

    return rule


def _python_rules() -> list[Callable[[dict[str, Any]], bool]]:
    return [_python_rule(i) for i in range(20)]


def _rust_eval(expr: str, variables: dict[str, Any]) -> Any:
    try:
        return cel.compile(expr).execute(variables)
    except Exception:
        return ERROR


_celpy_env = celpy.Environment()


def _celpy_eval(expr: str, variables: dict[str, Any]) -> Any:
    try:
        program = _celpy_env.program(_celpy_env.compile(expr))
        result = program.evaluate({k: celpy.json_to_cel(v) for k, v in variables.items()})
    except Exception:
        return ERROR
    if isinstance(result, celpy.CELEvalError):
        return ERROR
    if isinstance(result, celpy.celtypes.BoolType):
        return bool(result)
    if isinstance(result, celpy.celtypes.IntType | celpy.celtypes.UintType):
        return int(result)
    return result


def _ok(got: Any, expected: Any) -> bool:
    if expected is ERROR or got is ERROR:
        return got is expected
    try:
        return bool(got == expected) and isinstance(got, bool) == isinstance(expected, bool)
    except Exception:
        return False


def correctness() -> dict[str, int]:
    scores = {"cel (Rust)": 0, "celpy": 0}
    print(f"{'case':<60} {'expected':>8} {'cel':>8} {'celpy':>8}")
    for expr, expected in CASES:
        rust, py = _rust_eval(expr, {}), _celpy_eval(expr, {})
        rust_ok, py_ok = _ok(rust, expected), _ok(py, expected)
        scores["cel (Rust)"] += rust_ok
        scores["celpy"] += py_ok
        mark = "" if rust_ok and py_ok else "   <-"
        print(f"{expr[:60]:<60} {expected!r:>8} {rust!r:>8} {py!s:>8}{mark}")
    for name, score in scores.items():
        print(f"{name}: {score}/{len(CASES)} cases as the spec says")
    return scores


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def speed(rounds: int) -> None:
    started = time.perf_counter()
    rust_programs = [cel.compile(r) for r in RULES]
    rust_compile = (time.perf_counter() - started) / len(RULES) * 1e6
    started = time.perf_counter()
    celpy_programs = [_celpy_env.program(_celpy_env.compile(r)) for r in RULES]
    celpy_compile = (time.perf_counter() - started) / len(RULES) * 1e6

    python_rules = _python_rules()
    floor, rust, py = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        results_floor = [rule(CONTEXT) for rule in python_rules]
        floor.append(time.perf_counter() - t)

        t = time.perf_counter()
        context = cel.Context(CONTEXT)
        results_rust = [p.execute(context) for p in rust_programs]
        rust.append(time.perf_counter() - t)

        t = time.perf_counter()
        activation = {k: celpy.json_to_cel(v) for k, v in CONTEXT.items()}
        results_py = [bool(p.evaluate(activation)) for p in celpy_programs]
        py.append(time.perf_counter() - t)
    assert results_floor == results_rust == results_py, (results_floor, results_rust, results_py)

    n = len(RULES)
    print(f"\n{n} rule conditions against one proposal context, {rounds} rounds (p50):")
    print(f"{'':<28} {'per proposal µs':>16} {'per condition µs':>17} {'compile µs':>11}")
    print(f"{'floor: plain Python':<28} {_p50(floor):>16.1f} {_p50(floor) / n:>17.2f} {'-':>11}")
    print(f"{'cel (Rust)':<28} {_p50(rust):>16.1f} {_p50(rust) / n:>17.2f} {rust_compile:>11.0f}")
    print(f"{'celpy':<28} {_p50(py):>16.1f} {_p50(py) / n:>17.2f} {celpy_compile:>11.0f}")
    print(f"ratio cel (Rust) / floor: {_p50(rust) / _p50(floor):.1f}x")
    print(f"ratio celpy / floor: {_p50(py) / _p50(floor):.1f}x")
    print(f"celpy / cel (Rust): {_p50(py) / _p50(rust):.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    correctness()
    speed(args.rounds)


if __name__ == "__main__":
    main()
