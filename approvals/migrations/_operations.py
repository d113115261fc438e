"""Operations shared by migrations (the loader skips this module: its name starts with `_`).

ReplaceIndex: on PostgreSQL the new index is built and the old one dropped CONCURRENTLY, so
submits and decisions go on meanwhile (the migration using it is not atomic); elsewhere plainly.
PostgresFunction: a function only PostgreSQL has.
"""

from django.db import models
from django.db.migrations.operations.base import Operation


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


class ReplaceIndex(Operation):
    """In the state, `drop` removed from `model_name` and `build` added; in the database, `build`
    built first and `drop` dropped after, CONCURRENTLY on PostgreSQL (the migration must not be
    atomic). Backwards, the other way round."""

    reversible = True

    def __init__(self, model_name: str, drop: models.Index, build: models.Index) -> None:
        self.model_name = model_name
        self.drop = drop
        self.build = build

    def deconstruct(self):
        return (self.__class__.__name__, [self.model_name, self.drop, self.build], {})

    def state_forwards(self, app_label, state) -> None:
        state.remove_index(app_label, self.model_name.lower(), self.drop.name)
        state.add_index(app_label, self.model_name.lower(), self.build)

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            swap(schema_editor, model, self.build, self.drop)

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            swap(schema_editor, model, self.drop, self.build)

    def describe(self) -> str:
        return f"Replace index {self.drop.name} on {self.model_name} with {self.build.name}"


class PostgresFunction(Operation):
    """`signature` (name and argument types) as a PL/pgSQL function returning the float8 that
    `select` (one SELECT of one value, $1 … for the arguments) gives, its plan made once per
    connection (`plan_cache_mode = force_generic_plan`): without the values, so `select` must
    have only one right way to read its rows. PostgreSQL only; backwards, dropped."""

    reversible = True

    def __init__(self, signature: str, select: str) -> None:
        self.signature = signature
        self.select = select

    def deconstruct(self):
        return (self.__class__.__name__, [self.signature, self.select], {})

    def state_forwards(self, app_label, state) -> None:
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(
                f"CREATE OR REPLACE FUNCTION {self.signature} RETURNS float8 "
                "LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$\n"
                f"DECLARE total float8;\nBEGIN\n{self.select}\nINTO total;\nRETURN total;\nEND\n$$"
            )

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"DROP FUNCTION IF EXISTS {self.signature}")

    def describe(self) -> str:
        return f"Create function {self.signature} (PostgreSQL)"
