from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from evals import services
from evals.models import EvalSet, Prompt, PromptLabel, PromptLabelMove, PromptVersion
from foundation import configfile
from foundation.errors import ApplicationError, Conflict

pytestmark = pytest.mark.django_db
EXAMPLE = Path(__file__).resolve().parents[2] / "evals" / "examples" / "refund_eligibility.yaml"


def make(version: int | None = None, text: Any = "Hello {{name}}", **kwargs: Any) -> PromptVersion:
    return services.prompt_version_create(
        name="greet",
        version=version,
        template=text,
        route="evals-small",
        **kwargs,
    )[0]


def test_versions_are_immutable_and_numbered() -> None:
    v1 = make()
    v2 = make(text="Hi {{name}}")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.template == [{"role": "user", "content": "Hello {{name}}"}]
    assert (
        services.prompt_version_create(
            name="greet", version=1, template="Hello {{name}}", route="evals-small"
        )[1]
        == "unchanged"
    )
    with pytest.raises(Conflict, match="immutable, declare version 3"):
        make(version=1, text="Changed {{name}}")
    v1.refresh_from_db()
    assert v1.template[0]["content"] == "Hello {{name}}"
    with pytest.raises(ApplicationError, match="template"):
        make(text=[{"role": "user"}])


def test_labels_move_between_versions_with_history() -> None:
    v1 = make(labels=["production"], actor="alice")
    v2 = make(text="Hi {{name}}", labels=["staging"], actor="alice")
    assert services.prompt_resolve(ref="greet@production") == v1
    assert services.prompt_resolve(ref="greet") == v1  # a bare name means production
    assert services.prompt_resolve(ref="greet@staging") == v2
    assert services.prompt_resolve(ref="greet@2") == v2

    prompt = Prompt.objects.get(name="greet")
    assert services.prompt_label_move(prompt=prompt, label="production", version=v2, actor="bob")
    assert not services.prompt_label_move(
        prompt=prompt, label="production", version=v2, actor="bob"
    )
    assert services.prompt_resolve(ref="greet@production") == v2
    assert PromptLabel.objects.filter(prompt=prompt).count() == 2
    moves = list(
        PromptLabelMove.objects.filter(label="production")
        .order_by("id")
        .values_list("from_version", "to_version", "actor")
    )
    assert moves == [(None, 1, "alice"), (1, 2, "bob")]

    # Rolling back is a move too.
    out = StringIO()
    call_command("evals", "label", "greet", "production", "1", stdout=out)
    assert "greet:production → v1" in out.getvalue()
    assert services.prompt_resolve(ref="greet@production") == v1

    with pytest.raises(ApplicationError, match="Bad label"):
        services.prompt_label_move(prompt=prompt, label="7", version=v1)
    with pytest.raises(ApplicationError, match="no version or label 'canary'"):
        services.prompt_resolve(ref="greet@canary")
    with pytest.raises(ApplicationError, match="No prompt"):
        services.prompt_resolve(ref="nope@1")


def test_rendering_fills_variables_and_refuses_missing_ones() -> None:
    version = make(
        text=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "{{ order.id }}: {{msg}}"},
        ]
    )
    messages = services.render_messages(
        version=version, case_input={"order": {"id": "ORD-1"}, "msg": "late"}
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ORD-1: late"},
    ]
    with pytest.raises(ApplicationError, match="no variable 'msg'"):
        services.render_messages(version=version, case_input={"order": {"id": "x"}})
    # Recorded conversations keep their turns; the version's system prompt replaces the old one.
    recorded = [{"role": "system", "content": "Old rules."}, {"role": "user", "content": "Refund?"}]
    assert services.render_messages(version=version, case_input=recorded) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Refund?"},
    ]


def test_apply_declares_prompts_and_eval_sets_idempotently() -> None:
    text = EXAMPLE.read_text()
    report = configfile.apply(text, source="example.yaml")
    assert "prompt refund-eligibility@1: created (labels moved: production)" in report
    assert "prompt refund-eligibility@2: created (labels moved: staging)" in report
    assert "eval set refund-eligibility: created" in report
    eval_set = EvalSet.objects.get(name="refund-eligibility")
    assert (eval_set.scorer, eval_set.scorer_config) == ("label", {"field": "eligible"})
    assert services.prompt_resolve(ref="refund-eligibility@staging").version == 2

    again = configfile.apply(text, source="example.yaml")
    assert "prompt refund-eligibility@1: unchanged" in again
    assert "eval set refund-eligibility: unchanged" in again


def test_apply_refuses_a_changed_version_and_writes_nothing() -> None:
    configfile.apply(EXAMPLE.read_text(), source="example.yaml")
    changed = """
prompts:
  - {name: refund-eligibility, version: 3, template: "new", route: evals-refunds-large, labels: [canary]}
  - {name: refund-eligibility, version: 1, template: "edited in place", route: evals-refunds-large}
"""
    with pytest.raises(configfile.ConfigFileError) as info:
        configfile.apply(changed, source="changed.yaml")
    assert "prompts[1] (refund-eligibility@1)" in info.value.problems[0]
    assert not PromptVersion.objects.filter(version=3).exists()  # the whole file rolled back


def test_apply_validates_sections_with_line_numbers() -> None:
    bad = """
eval_sets:
  - {name: a, scorer: vibes}
  - name: b
    scorer: {kind: label}
prompts:
  - {name: p, version: 0, template: "x", route: r, labels: ["1"]}
"""
    with pytest.raises(configfile.ConfigFileError) as info:
        configfile.parse(bad, source="bad.yaml")
    text = "\n".join(info.value.problems)
    assert "line 3: eval_sets[0].scorer" in text and "unknown scorer" in text
    assert "eval_sets[1].scorer" in text and "field" in text
    assert "prompts[0].version" in text and "prompts[0].labels" in text


def test_the_database_refuses_to_change_a_prompt_version() -> None:
    from django.db import DatabaseError, transaction

    version = make()
    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
        PromptVersion.objects.filter(pk=version.pk).update(
            template=[{"role": "user", "content": "x"}]
        )
    PromptVersion.objects.filter(pk=version.pk).update(created_at=version.created_at)  # harmless


def test_apply_refuses_a_prompt_on_an_unknown_route() -> None:
    with pytest.raises(configfile.ConfigFileError) as info:
        configfile.apply(
            "prompts:\n  - {name: p, version: 1, template: x, route: nowhere}\n", source="p.yaml"
        )
    assert info.value.problems == ["prompts[0] (p@1): unknown llmcalls route 'nowhere'"]
    assert not Prompt.objects.exists()
