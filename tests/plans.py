"""What PostgreSQL's planner does with a statement: its plan's nodes, and a table grown in SQL
to the shape where a plan goes wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.db import connection

from approvals.models import Proposal


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def explain(sql: str) -> dict[str, Any]:
    """The plan PostgreSQL would run `sql` (a statement as executed, values inlined) with."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
        (plan,) = cursor.fetchone()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return plan[0]["Plan"]


def scans(plan: dict[str, Any], table: str | None = None) -> list[tuple[str, str | None]]:
    """(node type, index name or None) of each node of the plan that reads a table (`table`
    only, if given)."""
    return [
        (n["Node Type"], n.get("Index Name"))
        for n in nodes(plan)
        if "Relation Name" in n and table in (None, n["Relation Name"])
    ]


def copy_proposal(template: Proposal, count: int, **columns: str) -> None:
    """`count` copies of `template` in one INSERT … SELECT, each column in `columns` given as an
    SQL expression that may use the copy's number `g` (1 … count)."""
    names = [str(f.column) for f in Proposal._meta.concrete_fields if not f.primary_key]
    values = [columns.get(name, name) for name in names]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO approvals_proposal (id, {', '.join(names)}) "  # noqa: S608 - the model's columns
            f"SELECT gen_random_uuid(), {', '.join(values)} FROM approvals_proposal, "
            f"generate_series(1, %s) g WHERE id = %s",
            [count, template.pk],
        )


def nested_plans(sql: str, params: list[Any], *, runs: int = 2) -> list[dict[str, Any]]:
    """The plans of the statements that read a table inside the functions `sql` calls (run `runs`
    times), handed back by auto_explain as notices, after `DISCARD PLANS` (this connection's
    earlier plans of a function). In the caller's transaction: the settings are LOCAL."""
    plans: list[dict[str, Any]] = []
    with connection.cursor() as cursor:
        cursor.execute("LOAD 'auto_explain'")
        for name, value in [
            ("log_min_duration", "0"),
            ("log_nested_statements", "on"),
            ("log_level", "notice"),
            ("log_format", "json"),
        ]:
            cursor.execute(f"SET LOCAL auto_explain.{name} = {value}")
        raw = connection.connection

        def notice(diagnostic: Any) -> None:
            text = diagnostic.message_primary or ""
            if "plan:" in text:
                plan = json.loads(text.split("plan:", 1)[1])["Plan"]
                if any(n.get("Relation Name") for n in nodes(plan)):  # not the call itself
                    plans.append(plan)

        raw.add_notice_handler(notice)
        try:
            cursor.execute("DISCARD PLANS")
            for _ in range(runs):
                cursor.execute(sql, params)
                cursor.fetchall()
        finally:
            raw.remove_notice_handler(notice)
    return plans
