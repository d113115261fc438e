"""Model permissions from one statement: an authentication backend listed before Django's
ModelBackend (settings.AUTHENTICATION_BACKENDS).

Every reviewer page asks for one (`perms.evals.view_evalset`, the sections menu). ModelBackend
reads a user's own permissions and their groups' in two ORM statements, 5-8 ms of the queue
page on the growth fill (bench/README.md, growth.py, stream "queue"); here the same set is one
statement of plain SQL, ~0.3 ms, read once per user object (so once per request). The answer is
given here and is final: yes, or PermissionDenied, which Django documents as a refusal that no
later backend is asked about, so ModelBackend does not read the set again. It is the answer
ModelBackend gives: an inactive or anonymous user has no permission, anyone else those granted
to them or to a group of theirs (an active superuser has all of them before any backend is
asked, in User.has_perm). A permission on one object (`obj`) is left to the backends after this
one, as are the async checks (`ahas_perm`, answered by ModelBackend).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import connection

_CACHE = "_permissions_one_statement"  # on the user object, as ModelBackend's _perm_cache


class PermissionBackend:
    """No `get_user` (Django's test client signs in with the first backend that has one) and no
    async checks: signing in and the session's user stay ModelBackend's."""

    def authenticate(self, request: Any, **credentials: Any) -> None:
        return None  # signs no one in

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        """ "app_label.codename" of each permission of the user or of one of their groups."""
        if obj is not None or not user_obj.is_active or user_obj.is_anonymous:
            return set()
        cached: set[str] | None = getattr(user_obj, _CACHE, None)
        if cached is None:
            cached = _read(user_obj.pk)
            setattr(user_obj, _CACHE, cached)
        return cached

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        if obj is not None:
            return False  # not this backend's question
        if perm in self.get_all_permissions(user_obj):
            return True
        raise PermissionDenied

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        if any(p.partition(".")[0] == app_label for p in self.get_all_permissions(user_obj)):
            return True
        raise PermissionDenied


def _read(user_id: int) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(_sql(), [user_id, user_id])
        return {f"{app_label}.{codename}" for app_label, codename in cursor.fetchall()}


@cache
def _sql() -> str:
    """The statement, from the models' own table and column names (built once)."""
    q = connection.ops.quote_name
    own = User.user_permissions.through._meta
    member = User.groups.through._meta
    granted = Group.permissions.through._meta

    def column(meta: Any, name: str) -> str:
        return q(meta.get_field(name).column)

    return (
        f"SELECT ct.{q('app_label')}, p.{q('codename')} "  # noqa: S608 - names from _meta, quoted
        f"FROM {q(Permission._meta.db_table)} p "
        f"JOIN {q(ContentType._meta.db_table)} ct ON ct.{q('id')} = p.{q('content_type_id')} "
        f"WHERE p.{q('id')} IN ("
        f"SELECT {column(own, 'permission')} FROM {q(own.db_table)} "
        f"WHERE {column(own, 'user')} = %s "
        f"UNION SELECT g.{column(granted, 'permission')} FROM {q(granted.db_table)} g "
        f"JOIN {q(member.db_table)} m ON m.{column(member, 'group')} = g.{column(granted, 'group')} "
        f"WHERE m.{column(member, 'user')} = %s)"
    )
