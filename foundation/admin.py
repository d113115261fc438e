"""The admin base for records that are written only by the code: logs, audit events, outbox rows.

Editing them by hand would break what they witness (an audit trail, a delivery's attempts), so
the admin shows them and nothing more.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shows a model; no one adds, changes or deletes its rows here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
