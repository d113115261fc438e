"""The history row is rendered in Python (approvals/rows.py) for the page and the live push. Its
HTML must stay what the template `approvals/_history_row.html` rendered before it was replaced:
`history_row_golden.html` was generated from that template for the rows below, with the same
clock, time zones and script prefixes (the commit that added this test also compared the page's partial and the live push with the
old templates' output, with and without rows, a next page and a cursor)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from django.contrib.auth.models import User
from django.template.loader import render_to_string

from approvals import rows as row_html
from approvals import selectors
from approvals.models import ActionType, Proposal
from tests.approvals.test_queue_row_render import (
    HOSTILE,
    NOW,
    SETTINGS,
    _rendering,
    assert_matches_golden,
    golden_rows,
)

GOLDEN = Path(__file__).with_name("history_row_golden.html")
REASON = "Refund within policy: the order ORD-77 was paid twice; " * 3  # longer than 80


def _type(key: str) -> ActionType:
    return ActionType(pk=hash(key) % 10_000, key=key, risk="medium")


def _decided(n: int, action_type: ActionType, **fields: object) -> Proposal:
    values: dict[str, object] = {
        "id": uuid.UUID(int=n * 0x2222_2222_2222),
        "summary": f"Refund order ORD-{n}",
        "confidence": 0.9,
        "payload_hash": "a" * 64,
        "state": Proposal.State.EXECUTED,
        "decided_by": Proposal.DecidedBy.RULE,
        "decision_rule": "small-refunds",
        "created_at": NOW - timedelta(hours=n),
        "updated_at": NOW - timedelta(minutes=13 * n, seconds=5),
    }
    values.update(fields)
    return Proposal(action_type=action_type, **values)  # type: ignore[arg-type]


def rows() -> list[tuple[str, Proposal]]:
    """One row of each shape history shows; all text that could come from a model, a rule or
    an account is hostile somewhere."""
    refund = _type("refund.issue")
    hostile_type = _type(HOSTILE)
    alice = User(pk=3, username="alice")
    return [
        ("by a rule", _decided(1, refund)),
        (
            "by a reviewer, long reason",
            _decided(
                2, refund, state=Proposal.State.REJECTED, decided_by="reviewer",
                decision_rule="", decision_reviewer=alice, decision_reason=REASON,
            ),
        ),
        (
            "hostile everything, by a reviewer",
            _decided(
                3, hostile_type, summary=HOSTILE[:200], state=Proposal.State.APPROVED,
                decided_by="reviewer", decision_reviewer=User(pk=4, username=HOSTILE[:150]),
                decision_reason=HOSTILE * 3,
            ),
        ),
        ("hostile rule", _decided(4, refund, decision_rule=HOSTILE[:200])),
        (
            "by policy, failed, days ago",
            _decided(
                5, refund, state=Proposal.State.FAILED, decided_by="policy", decision_rule="",
                decision_reason="Executor returned 500", updated_at=NOW - timedelta(days=40),
            ),
        ),
        (
            "decided by no one, expired",
            _decided(
                6, refund, state=Proposal.State.EXPIRED, decided_by="", decision_rule="",
                updated_at=NOW - timedelta(seconds=20),
            ),
        ),
        (
            "a reason of exactly 80 characters and one of 81",
            _decided(7, refund, state=Proposal.State.CANCELLED, decision_reason="x" * 80),
        ),
        ("81", _decided(8, refund, decision_reason="é" * 81)),
    ]  # fmt: skip


def test_the_python_row_is_the_templates_row() -> None:
    assert_matches_golden(rows, lambda p, oob: row_html.history_row(p, oob=oob), GOLDEN)


def test_the_page_and_the_push_render_the_same_rows() -> None:
    golden = golden_rows(GOLDEN)
    more = '<tr id="history-more" class="more"><td colspan="6"><a class="button" href="?a=&lt;b'
    for zone, prefix in SETTINGS:
        with _rendering(zone, prefix):
            shapes = rows()
            page = selectors.Page(rows=[p for _name, p in shapes])
            html = render_to_string(
                "approvals/_history_rows.html",
                {"page": page, "filters": selectors.HistoryFilters(), "next_url": "?a=<b>"},
            )
            # Each row, then the loop's newline; the "more" row; the partial's last newline.
            expected = "".join(golden[(name, zone, prefix, False)] + "\n" for name, _p in shapes)
            assert html.startswith(expected + more) and html.endswith("</tr>\n")
            for name, proposal in shapes:
                pushed = render_to_string(
                    "approvals/_live_update.html", {"p": proposal, "oob": True}
                )
                assert golden[(name, zone, prefix, True)] + "\n" in pushed


def test_an_empty_page_says_so_only_on_its_first_page() -> None:
    empty = selectors.Page(rows=[])
    first = render_to_string(
        "approvals/_history_rows.html", {"page": empty, "filters": selectors.HistoryFilters()}
    )
    assert first == '<tr class="empty"><td colspan="6">No decided proposals match.</td></tr>\n\n'
    later = render_to_string(
        "approvals/_history_rows.html",
        {"page": empty, "filters": selectors.HistoryFilters(after="x")},
    )
    assert later == "\n\n"
