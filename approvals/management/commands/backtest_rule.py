from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals import backtest
from approvals.models import ActionType
from approvals.rules import RuleCompileError, RuleSpec
from foundation import configfile


def specs_from_file(text: str, *, source: str) -> list[RuleSpec]:
    """Rules to test from a file: one rule mapping, or a `rules:` list as `apply` takes."""
    data, _ = configfile.load_yaml(text)
    if isinstance(data, dict) and "rules" not in data:
        text = configfile.yaml.safe_dump({"rules": [data]}, sort_keys=False)
    parsed = configfile.parse(text, source=source)
    if not parsed.get("rules"):
        raise configfile.ConfigFileError([f"{source}: no rule in the file"])
    specs = []
    for item in parsed["rules"]:
        action_type_id = None
        if item.action_type:
            action_type = ActionType.objects.filter(key=item.action_type).first()
            if action_type is None:
                raise configfile.ConfigFileError(
                    [f"{source}: rule {item.name!r}: unknown action type {item.action_type!r}"]
                )
            action_type_id = action_type.pk
        specs.append(
            RuleSpec(
                name=item.name,
                when=item.when,
                outcome=item.outcome,
                priority=item.priority,
                action_type_id=action_type_id,
                reason=item.reason,
                allows_irreversible=item.allows_irreversible,
                approvals_required=item.approvals_required,
                mode=item.mode,
                enabled=item.enabled,
            )
        )
    return specs


class Command(BaseCommand):
    help = (
        "Evaluate a rule (a draft, or an edit of a stored one by the same name) over the last N "
        "proposals and report which decisions it would change."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--file", required=True, help="YAML: one rule, or a rules: list")
        parser.add_argument("--last", type=int, default=backtest.DEFAULT_LAST)
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        if options["last"] < 1:
            raise CommandError("--last must be at least 1")
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        try:
            specs = specs_from_file(text, source=path)
            results = [backtest.backtest_rule(candidate=s, last=options["last"]) for s in specs]
        except configfile.ConfigFileError as exc:
            raise CommandError("\n".join(exc.problems)) from None
        except RuleCompileError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            payload: Any = [r.as_dict() for r in results]
            self.stdout.write(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
            return
        self.stdout.write("\n\n".join(backtest.format_result(r) for r in results))
