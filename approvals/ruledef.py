"""A rule described once: the attributes a person writes, in one pydantic model.

`RuleDefinition` is the `rules:` item of a config file, the snapshot every saved version keeps
(RuleVersion.snapshot and the `rule.saved` audit event), the admin form's cleaned data (the form
validates through it) and the input of `backtest_rule`; the engine's RuleSpec extends it with
where the rule applies and its version. Its fields carry the names of the Rule model's columns,
so adding an attribute is: a field on Rule, a field here, a migration
(tests/approvals/test_rule_definition.py checks that every consumer uses exactly these fields).

Only `action_type` differs between the two: a key here, a foreign key on Rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from approvals.conditions import RuleCompileError, compile_condition

if TYPE_CHECKING:
    from approvals.models import ActionType, Rule

# A field marked so is left out of `export_rules` while it holds its default.
OMITTED_AT_DEFAULT: dict[str, Any] = {"omitted_at_default": True}

# Keys snapshots had before they were this model's dump, and what they became.
_RENAMED_IN_OLD_SNAPSHOTS = {"action_type_key": "action_type"}


class ConditionRefused(ValueError):
    """A condition that does not compile: the message names the rule (config-file problems),
    `reason` alone is what the admin shows beside the field."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"rule {name!r}: {reason}")
        self.reason = reason


class RuleDefinition(BaseModel):
    """A rule's attributes; see the module docstring for everything that uses it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", json_schema_extra=OMITTED_AT_DEFAULT)
    action_type: str | None = Field(
        default=None,
        description="an action type key; omit for all",
        json_schema_extra=OMITTED_AT_DEFAULT,
    )
    priority: int = 100
    when: str = Field(min_length=1)
    outcome: Literal["approve", "review", "reject"]
    reason: str = Field(default="", max_length=500)
    allows_irreversible: bool = False
    approvals_required: Literal[1, 2] = Field(
        default=1,
        description="2: a review outcome needs two different reviewers' approvals",
        json_schema_extra=OMITTED_AT_DEFAULT,
    )
    mode: Literal["enforce", "shadow"] = "enforce"
    enabled: bool = True

    @field_validator("when")
    @classmethod
    def _compiles(cls, when: str, info: ValidationInfo) -> str:
        try:
            compile_condition(when)
        except RuleCompileError as exc:
            raise ConditionRefused(info.data.get("name", "?"), str(exc)) from None
        return when

    # --- to and from the Rule model --------------------------------------------------------

    @classmethod
    def of(cls, rule: Rule, **extra: Any) -> Self:
        """The attributes of a stored (or edited) rule, unvalidated: stored rules were checked
        when saved, and one a library upgrade now refuses must still load (to fail closed)."""
        values = {name: getattr(rule, name) for name in ATTRIBUTES if name != "action_type"}
        values["action_type"] = rule.action_type.key if rule.action_type is not None else None
        return cls.model_construct(**values, **extra)

    def resolve_action_type(self) -> ActionType | None:
        """The action type the key names (None: every type); ApplicationError when unknown."""
        from approvals.models import ActionType
        from foundation.errors import ApplicationError

        if self.action_type is None:
            return None
        found = ActionType.objects.filter(key=self.action_type).first()
        if found is None:
            raise ApplicationError(
                f"rule {self.name!r}: unknown action type {self.action_type!r}",
                status=422,
                code="unknown-action-type",
                errors=[{"loc": ["action_type"], "msg": f"unknown: {self.action_type!r}"}],
            )
        return found

    def apply_to(self, rule: Rule) -> None:
        """Give `rule` these attributes (unsaved; services.rule_save saves and versions it)."""
        for name in ATTRIBUTES:
            if name != "action_type":
                setattr(rule, name, getattr(self, name))
        rule.action_type = self.resolve_action_type()

    # --- snapshots and files ---------------------------------------------------------------

    def attributes(self) -> dict[str, Any]:
        """The attributes only (a RuleSpec also carries its action type's id and version)."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def snapshot(self) -> dict[str, Any]:
        """What a saved version keeps: every attribute, as JSON."""
        return self.model_dump(mode="json", include=set(ATTRIBUTES))

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> RuleDefinition:
        """A stored snapshot, whatever its age: an attribute added since takes its default, an
        old key its new name, a key no longer described is ignored. Unvalidated, like `of`."""
        values = {_RENAMED_IN_OLD_SNAPSHOTS.get(key, key): value for key, value in data.items()}
        values = {key: value for key, value in values.items() if key in ATTRIBUTES}
        if values.get("action_type") == "":  # old snapshots wrote "" for every type
            values["action_type"] = None
        return RuleDefinition.model_construct(**values)

    def export_item(self) -> dict[str, Any]:
        """This rule as an item of a `rules:` file (`export_rules`)."""
        fields = RuleDefinition.model_fields
        return {
            name: value
            for name, value in self.snapshot().items()
            if fields[name].json_schema_extra != OMITTED_AT_DEFAULT or value != fields[name].default
        }


# The attributes, in file order: what the Rule model stores and every consumer above uses.
ATTRIBUTES: tuple[str, ...] = tuple(RuleDefinition.model_fields)
