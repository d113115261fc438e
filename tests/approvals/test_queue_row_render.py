"""The queue row is rendered in Python (approvals/rows.py) for the page and the live push. Its
HTML must stay what the template `approvals/_queue_row.html` rendered before it was replaced:
`queue_row_golden.html` was generated from that template for the rows below, with the same
clock, time zones and script prefixes (`render_old_template` in the commit that added this test,
"tests: golden HTML of the queue row template …", where it is also checked against it)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import time_machine
from django.contrib.auth.models import User
from django.template.loader import render_to_string
from django.urls import clear_script_prefix, set_script_prefix
from django.utils import timezone

from approvals import rows as row_html
from approvals import selectors
from approvals.models import ActionType, Claim, Proposal, Review

GOLDEN = Path(__file__).with_name("queue_row_golden.html")
NOW = datetime(2026, 11, 30, 6, 30, 15, 123456, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script><img src=x onerror=\"alert(2)\"><b hx-get='/x'>&amp;"
# (time zone, script prefix) the rows are rendered under: a half-hour offset and a prefix.
SETTINGS = [("UTC", "/"), ("Asia/Kolkata", "/gate&house/")]


def _type(key: str, risk: str, *, irreversible: bool = False, approvals: int = 1) -> ActionType:
    return ActionType(
        pk=hash(key) % 10_000, key=key, risk=risk, irreversible=irreversible,
        approvals_required=approvals,
    )  # fmt: skip


def _proposal(n: int, action_type: ActionType, **fields: object) -> Proposal:
    values: dict[str, object] = {
        "id": uuid.UUID(int=n * 0x1111_1111_1111),
        "summary": f"Refund order ORD-{n}",
        "confidence": 0.9,
        "payload_hash": "a" * 64,
        "state": Proposal.State.PENDING_REVIEW,
        "created_at": NOW - timedelta(minutes=7 * n, seconds=3),
    }
    values.update(fields)
    proposal = Proposal(action_type=action_type, **values)  # type: ignore[arg-type]
    Proposal.claim.related.set_cached_value(proposal, None)
    return proposal


def _claim(proposal: Proposal, username: str, expires_at: datetime) -> None:
    claim = Claim(proposal=proposal, reviewer=User(pk=7, username=username), expires_at=expires_at)
    Proposal.claim.related.set_cached_value(proposal, claim)


def _reviews(proposal: Proposal, *reviews: tuple[str, str]) -> None:
    queryset = Review.objects.all()
    queryset._result_cache = [  # type: ignore[attr-defined]
        Review(proposal=proposal, verdict=verdict, payload_hash=payload_hash)
        for verdict, payload_hash in reviews
    ]
    queryset._prefetch_done = True  # type: ignore[attr-defined]
    proposal._prefetched_objects_cache = {"reviews": queryset}  # type: ignore[attr-defined]


def rows() -> list[tuple[str, Proposal]]:
    """One row of each shape the queue shows; all text that could come from a model or an
    admin is hostile somewhere."""
    refund = _type("refund.issue", "medium")
    wipe = _type("account.delete", "high", irreversible=True)
    hostile_type = _type(HOSTILE, HOSTILE)
    two = _type("payout.send", "critical", approvals=2)
    shapes: list[tuple[str, Proposal]] = []

    plain = _proposal(1, refund, confidence=0.123456)
    shapes.append(("plain", plain))

    hostile = _proposal(2, hostile_type, summary=HOSTILE[:200], confidence=1.0)
    _claim(hostile, HOSTILE[:150], NOW + timedelta(minutes=4))
    shapes.append(("hostile text, claimed", hostile))

    four_eyes = _proposal(3, two, review_due_at=NOW + timedelta(hours=3, minutes=5))
    _reviews(four_eyes, ("approve", "a" * 64), ("approve", "b" * 64), ("reject", "a" * 64))
    shapes.append(("four-eyes, one current approval, SLA due", four_eyes))

    four_eyes_claimed = _proposal(
        4, refund, required_approvals=3, expires_at=NOW + timedelta(days=2, hours=1)
    )
    _claim(four_eyes_claimed, "bob", NOW + timedelta(seconds=30))
    _reviews(four_eyes_claimed, ("approve", "a" * 64), ("approve", "a" * 64))
    shapes.append(("four-eyes by the proposal, claimed, expiring", four_eyes_claimed))

    breached = _proposal(
        5,
        wipe,
        escalated_at=NOW - timedelta(minutes=1),
        review_due_at=NOW - timedelta(minutes=5),
        expires_at=NOW + timedelta(hours=5),
        created_at=NOW - timedelta(days=3, hours=2),
    )
    shapes.append(("SLA breached, irreversible", breached))

    expiring = _proposal(6, wipe, expires_at=NOW + timedelta(minutes=50), confidence=0.005)
    _claim(expiring, "carol", NOW - timedelta(seconds=1))  # lapsed: not shown
    shapes.append(("expiring, lapsed claim", expiring))

    edited = _proposal(7, two, final_payload={"amount": 2}, created_at=NOW - timedelta(days=400))
    _reviews(edited, ("approve", "a" * 64))  # bound to the payload before the edit: void
    shapes.append(("four-eyes, approval voided by an edit", edited))
    return shapes


def render_all(
    shapes: Callable[[], list[tuple[str, Proposal]]], render: Callable[[Proposal, bool], str]
) -> str:
    """Each of `shapes`' rows in each of SETTINGS, with and without oob, as the golden file
    lays them out (the shapes are made inside each setting's clock and zone)."""
    parts = []
    for zone, prefix in SETTINGS:
        with _rendering(zone, prefix):
            for name, proposal in shapes():
                for oob in (False, True):
                    parts.append(f"<!-- {name}; {zone}, {prefix}, oob={oob} -->\n")
                    parts.append(render(proposal, oob))
                    parts.append("\n")
    return "".join(parts)


@contextmanager
def _rendering(zone: str, prefix: str) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False), timezone.override(zone):
        set_script_prefix(prefix)
        try:
            yield
        finally:
            clear_script_prefix()


def golden_rows(path: Path) -> dict[tuple[str, str, str, bool], str]:
    sections = re.findall(
        r"<!-- (.*?); (.*?), (.*?), oob=(\w+) -->\n(.*?</tr>\n)\n", path.read_text(), re.S
    )
    return {(name, zone, prefix, oob == "True"): row for name, zone, prefix, oob, row in sections}


def assert_matches_golden(
    shapes: Callable[[], list[tuple[str, Proposal]]],
    render: Callable[[Proposal, bool], str],
    path: Path,
) -> None:
    rendered = render_all(shapes, render)
    golden = path.read_text()
    assert rendered.count("<tr ") == len(SETTINGS) * len(shapes()) * 2 == len(golden_rows(path))
    for ours, theirs in zip(rendered.split("<!-- "), golden.split("<!-- "), strict=True):
        assert ours == theirs  # one row at a time: a failure shows which
    assert "<script>" not in rendered and "&lt;script&gt;" in rendered


def test_the_python_row_is_the_templates_row() -> None:
    assert_matches_golden(rows, lambda p, oob: row_html.queue_row(p, oob=oob), GOLDEN)


def test_the_page_and_the_push_render_the_same_rows() -> None:
    golden = golden_rows(GOLDEN)
    filters = selectors.QueueFilters()
    for zone, prefix in SETTINGS:
        with _rendering(zone, prefix):
            shapes = rows()
            page = selectors.Page(rows=[p for _name, p in shapes])
            html = render_to_string(
                "approvals/_queue_rows.html", {"page": page, "filters": filters}
            )
            # Each row, then the loop's newline; the partial's own last newline at the end.
            expected = "".join(golden[(name, zone, prefix, False)] + "\n" for name, _p in shapes)
            assert html == expected + "\n"
            for name, proposal in shapes:
                pushed = render_to_string(
                    "approvals/_live_update.html", {"p": proposal, "oob": True}
                )
                assert pushed.startswith(golden[(name, zone, prefix, True)] + "\n")
