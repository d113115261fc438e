"""Index swaps shared by migrations (the loader skips this module: its name starts with `_`).

On PostgreSQL the new index is built and the old one dropped CONCURRENTLY, so submits and
decisions go on meanwhile (the migration using this is not atomic); elsewhere plainly.
"""

from django.db import models


def _build_concurrently(schema_editor, model, index: models.Index) -> None:
    """CREATE INDEX CONCURRENTLY, first dropping what a failed build left (an invalid index)."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = %s",
            [index.name],
        )
        row = cursor.fetchone()
    if row is not None and row[0]:
        schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{index.name}"')
    if row is None or row[0]:
        schema_editor.add_index(model, index, concurrently=True)


def swap(schema_editor, model, build: models.Index, drop: models.Index) -> None:
    """Builds `build`, then drops `drop`."""
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.add_index(model, build)
        schema_editor.remove_index(model, drop)
        return
    _build_concurrently(schema_editor, model, build)
    schema_editor.remove_index(model, drop, concurrently=True)
