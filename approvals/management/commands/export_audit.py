"""`manage.py export_audit --since DATE [--output FILE]`: proposals and the audit trail as JSON
lines, for archiving. Nothing is purged: proposals and audit events are kept until you decide."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.dateparse import parse_date, parse_datetime

from approvals import selectors


def _since(text: str) -> datetime:
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"--since must be a date (2026-01-31) or an ISO time; got {text!r}")
        moment = datetime(day.year, day.month, day.day)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Write proposals created since DATE and audit events since DATE as JSON lines."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="YYYY-MM-DD or an ISO time (UTC)")
        parser.add_argument("--output", help="a file to write (default: standard output)")

    def handle(self, *args: Any, **options: Any) -> None:
        since = _since(options["since"])
        encoder = DjangoJSONEncoder(ensure_ascii=False, separators=(",", ":"))
        count = 0
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as handle:
                for row in selectors.audit_export(since=since):
                    handle.write(encoder.encode(row) + "\n")
                    count += 1
        else:
            for row in selectors.audit_export(since=since):
                self.stdout.write(encoder.encode(row))
                count += 1
        self.stderr.write(f"{count} records since {since.isoformat()}")
