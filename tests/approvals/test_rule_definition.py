"""A rule is described once (approvals/ruledef.py): every consumer uses exactly its attributes.

The set of attributes is read from the pydantic model; the Rule model, a config file (apply and
export), the version snapshot and the audit event, the admin form and the backtest's input must
each carry exactly that set — a field added to Rule but not to RuleDefinition (or the reverse)
fails here. Old snapshots, written before an attribute existed, still load.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import yaml
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from approvals import configspec, services
from approvals.admin import RuleForm
from approvals.backtest import backtest_rule
from approvals.management.commands.backtest_rule import specs_from_file
from approvals.models import ActionType, AuditEvent, Rule, RuleVersion
from approvals.ruledef import ATTRIBUTES, RuleDefinition
from approvals.rules import RuleSpec
from foundation import configfile
from foundation.errors import ApplicationError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rules.md"


def sample(action_type_key: str) -> dict[str, Any]:
    """Every attribute away from its default, derived from the model's fields: a new attribute
    of a type this does not know fails here until it gets a sample value."""
    chosen: dict[str, Any] = {
        "action_type": action_type_key,
        "when": "confidence > 0.5",
        "outcome": "review",  # the one outcome that may ask for two approvals
        "approvals_required": 2,
    }
    values: dict[str, Any] = {}
    for name, field in RuleDefinition.model_fields.items():
        kind = field.annotation
        if name in chosen:
            values[name] = chosen[name]
        elif kind is bool:
            values[name] = not field.default
        elif kind is int:
            values[name] = field.default + 7
        elif kind is str:
            values[name] = f"{name}-sample"
        elif get_origin(kind) is Literal:
            values[name] = next(c for c in get_args(kind) if c != field.default)
        else:
            raise AssertionError(f"give the new attribute {name!r} ({kind}) a sample value")
    assert all(values[name] != field.default for name, field in RuleDefinition.model_fields.items())
    return values


def test_the_rule_model_stores_exactly_the_described_attributes() -> None:
    stored = {f.name for f in Rule._meta.concrete_fields if f.editable and not f.primary_key}
    assert stored == set(ATTRIBUTES)
    assert list(ATTRIBUTES)[:2] == ["name", "description"]  # file order: the name first


def test_a_config_file_carries_every_attribute_there_and_back(refund_type: ActionType) -> None:
    item = sample(refund_type.key)
    assert configfile.apply(yaml.safe_dump({"rules": [item]})) == ["rule name-sample: created"]
    rule = Rule.objects.get()
    assert RuleDefinition.of(rule).snapshot() == item  # every attribute reached the model
    exported = configspec.export_rules()
    assert yaml.safe_load(exported) == {"rules": [item]}
    assert configfile.apply(exported) == ["rule name-sample: unchanged"]

    # The version snapshot and the audit event hold every attribute, and nothing else.
    assert rule.versions.get().snapshot == item
    event = AuditEvent.objects.get(kind="rule.saved")
    assert event.data == {"rule": "name-sample", "version": 1, **item}


def test_each_attribute_is_part_of_a_version(refund_type: ActionType) -> None:
    configfile.apply(yaml.safe_dump({"rules": [sample(refund_type.key)]}))
    rule = Rule.objects.get()
    for name in ATTRIBUTES:
        if name in {"name", "when", "outcome", "action_type"}:
            continue  # no default to go back to (or, for the type, covered by the file test)
        before = rule.version
        setattr(rule, name, RuleDefinition.model_fields[name].default)
        if name == "approvals_required":
            rule.outcome = "review"
        assert services.rule_save(rule=rule, actor="test") is True, name
        assert rule.version == before + 1
    assert rule.versions.count() == 1 + len(ATTRIBUTES) - 4


def test_the_admin_form_is_the_definition(
    admin_client_logged_in: Client, refund_type: ActionType
) -> None:
    assert set(RuleForm.base_fields) == set(ATTRIBUTES)
    item = sample(refund_type.key)
    posted = {name: ("on" if value is True else value) for name, value in item.items()}
    posted = {name: value for name, value in posted.items() if value is not False}  # a checkbox
    posted |= {"action_type": refund_type.pk, "versions-TOTAL_FORMS": 0}
    posted["versions-INITIAL_FORMS"] = 0
    response = admin_client_logged_in.post("/admin/approvals/rule/add/", posted)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert RuleDefinition.of(Rule.objects.get()).snapshot() == item

    # The definition's own checks reach the form's fields.
    form = RuleForm(data={**posted, "name": "other", "when": "confidence >= "})
    assert not form.is_valid()
    assert list(form.errors) == ["when"]
    assert "Syntax error" in form.errors["when"][0]
    assert "rule 'other'" not in form.errors["when"][0]  # the name is beside it already
    assert form.definition is None


def test_backtest_takes_the_definition(
    refund_type: ActionType, make_rule: Callable[..., Rule]
) -> None:
    item = sample(refund_type.key)
    definition = RuleDefinition.model_validate(item)
    spec = RuleSpec.draft(definition)
    assert (spec.snapshot(), spec.action_type_id, spec.version) == (item, refund_type.pk, None)
    assert specs_from_file(yaml.safe_dump(item), source="rule.yaml")[0] == spec
    result = backtest_rule(candidate=definition, last=10)
    assert (result.rule, result.examined) == ("name-sample", 0)
    with pytest.raises(ApplicationError, match="unknown action type 'nope'"):
        backtest_rule(candidate=definition.model_copy(update={"action_type": "nope"}))

    # What the engine loads from a stored rule is the same definition.
    configfile.apply(yaml.safe_dump({"rules": [item]}))
    stored = RuleSpec.of(Rule.objects.get())
    assert (stored.snapshot(), stored.version) == (item, 1)


# An item of `rules:` as the rule versions held it before approvals_required existed (and
# before the snapshot was the definition's dump: the type by `action_type_key`), plus a key
# no attribute carries any more.
OLD_SNAPSHOT = {
    "name": "old",
    "description": "",
    "priority": 100,
    "action_type_key": "refund.issue",
    "when": "confidence > 0.5",
    "outcome": "review",
    "reason": "",
    "allows_irreversible": False,
    "mode": "enforce",
    "enabled": True,
    "retired_attribute": "gone",
}


def test_an_old_snapshot_still_loads(
    refund_type: ActionType, admin_client_logged_in: Client
) -> None:
    loaded = RuleDefinition.from_snapshot(OLD_SNAPSHOT)
    assert (loaded.action_type, loaded.approvals_required) == ("refund.issue", 1)
    assert list(loaded.snapshot()) == list(ATTRIBUTES)
    assert RuleDefinition.from_snapshot({**OLD_SNAPSHOT, "action_type_key": ""}).action_type is None

    rule = Rule.objects.create(
        name="old", action_type=refund_type, when="confidence > 0.5", outcome="review", version=1
    )
    RuleVersion.objects.create(rule=rule, version=1, snapshot=OLD_SNAPSHOT)
    # Unchanged on today's terms: no new version; a change compares against the old snapshot.
    assert services.rule_save(rule=rule, actor="test") is False
    rule.approvals_required = 2
    assert services.rule_save(rule=rule, actor="test") is True
    assert rule.versions.get(version=2).snapshot["approvals_required"] == 2

    # The admin shows the old version beside the new.
    listing = admin_client_logged_in.get("/admin/approvals/ruleversion/")
    assert listing.status_code == 200 and "old" in listing.content.decode()
    page = admin_client_logged_in.get(f"/admin/approvals/rule/{rule.pk}/change/")
    assert page.status_code == 200 and "confidence &gt; 0.5" in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_version_columns_into_snapshots() -> None:
    before = [("approvals", "0009_outbox_trace_context")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = MigrationExecutor(connection).loader.project_state(before).apps
        old_rule = old.get_model("approvals", "Rule").objects.create(
            name="old", when="true", outcome="approve", version=1
        )
        old.get_model("approvals", "RuleVersion").objects.create(
            rule_id=old_rule.pk,
            version=1,
            name="old",
            priority=5,
            action_type_key="",
            when="true",
            outcome="approve",
            allows_irreversible=False,
            mode="shadow",
            enabled=True,
        )
    finally:
        # Forward to the latest, not only to `after`: later tests need every table (approvals
        # 0013's sums table left dropped broke every approval after this test).
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    version = RuleVersion.objects.get()
    assert version.snapshot == {
        "name": "old",
        "description": "",
        "priority": 5,
        "action_type": None,
        "when": "true",
        "outcome": "approve",
        "reason": "",
        "allows_irreversible": False,
        "approvals_required": 1,
        "mode": "shadow",
        "enabled": True,
    }
    assert list(RuleDefinition.from_snapshot(version.snapshot).snapshot()) == list(ATTRIBUTES)


def test_the_docs_describe_every_attribute() -> None:
    section = DOCS.read_text().split("## A rule\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)
    assert set(documented) == set(ATTRIBUTES)
