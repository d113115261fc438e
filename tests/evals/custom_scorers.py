"""Custom scorers for the tests, imported by dotted path."""

from __future__ import annotations

from typing import Any

from evals.scorers import Score


def same_length(*, output: str, ideal: Any, case_input: Any, tags: list[str]) -> float:
    return min(len(output), len(str(ideal))) / max(len(output), len(str(ideal)), 1)


def mentions_order(*, output: str, ideal: Any, case_input: Any, tags: list[str]) -> Score:
    order = case_input.get("order_id", "")
    return Score(order in output, 1.0 if order in output else 0.0, f"looked for {order}")


def broken(*, output: str, ideal: Any, case_input: Any, tags: list[str]) -> bool:
    raise RuntimeError("scorer bug")
