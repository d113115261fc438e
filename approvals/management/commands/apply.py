from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from foundation import configfile


class Command(BaseCommand):
    help = "Create or update configuration (action types, rules, …) from a YAML file. Idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="YAML file, or - for standard input")
        parser.add_argument("--check", action="store_true", help="validate only; write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        try:
            if options["check"]:
                configfile.parse(text, source=path)
                self.stdout.write(f"{path}: valid")
                return
            report = configfile.apply(text, source=path)
        except configfile.ConfigFileError as exc:
            raise CommandError(
                "refused; nothing was changed:\n" + "\n".join(exc.problems)
            ) from None
        for line in report:
            self.stdout.write(line)
