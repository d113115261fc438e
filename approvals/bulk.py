"""Insert rows of several tables in one round trip.

The submit path writes a proposal and its first audit events in the same transaction. On
PostgreSQL they go in one statement (data-modifying CTEs); foreign keys are deferred to the
commit, so the order inside the statement does not matter. Elsewhere, one INSERT per table.
`transaction_started` tells whether such a statement may run alone, without BEGIN and COMMIT.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from django.db import connection, models
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import AutoField, Field, JSONField, Model
from django.db.models.sql import InsertQuery
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from foundation import jsonfast

# The SQL of a one-row INSERT depends only on the model; compiling it is most of what the ORM
# spends on the submit path, so it is compiled once per model and only the values are prepared
# per call, the same way the compiler prepares them, with two shortcuts on PostgreSQL: JSON
# columns are encoded with orjson (foundation/jsonfast.py) rather than json.dumps, and a value
# of the plain Python type of a plain column (a str for a CharField, an aware datetime for a
# DateTimeField, …), which Django's preparation would hand back unchanged, goes as it is.
# Several rows of a table repeat the row's VALUES tuple (in order, so serial ids follow the
# order of the rows).
Prepare = Callable[[Model], Any]
M = TypeVar("M", bound=Model)
_templates: dict[type[Model], tuple[str, list[Prepare]]] = {}

# Field classes (exactly these, not subclasses) and the value types they pass through unchanged.
_PASS_THROUGH: dict[type[Field[Any, Any]], tuple[type, ...]] = {
    models.CharField: (str,),
    models.TextField: (str,),
    models.FloatField: (float,),
    models.BooleanField: (bool,),
    models.UUIDField: (uuid.UUID,),
    models.DateTimeField: (datetime,),
    models.ForeignKey: (uuid.UUID,),
    # Integers and decimals: their own preparers below.
}


def _json_preparer(field: JSONField[Any, Any]) -> Prepare:
    attname = field.attname

    def prepare(row: Model) -> Any:
        value = getattr(row, attname)
        return None if value is None else Jsonb(value, dumps=jsonfast.dumps)

    return prepare


def _compile(row: Model) -> tuple[str, list[Prepare]]:
    model = type(row)
    fields = [
        f for f in model._meta.concrete_fields if not (f.primary_key and isinstance(f, AutoField))
    ]
    query = InsertQuery(model)
    query.insert_values(fields, [row])
    compiler = query.get_compiler(connection=connection)
    [(sql, _)] = compiler.as_sql()

    def generic(field: Field[Any, Any]) -> Prepare:
        return lambda row: compiler.prepare_value(field, compiler.pre_save_val(field, row))

    def plain(field: Field[Any, Any], types: tuple[type, ...]) -> Prepare:
        attname, slow = field.attname, generic(field)

        def prepare(row: Model) -> Any:
            value = getattr(row, attname)
            if value is None or (
                type(value) in types and getattr(value, "tzinfo", True) is not None
            ):
                return value  # what Django's preparation gives back for it, unchanged
            return slow(row)

        return prepare

    def wrapped(field: Field[Any, Any], wrap: Callable[[int], Any]) -> Prepare:
        attname, slow = field.attname, generic(field)

        def prepare(row: Model) -> Any:
            value = getattr(row, attname)
            if value is None:
                return None
            if type(value) is int:
                return wrap(value)  # what Django's preparation gives for it
            return slow(row)

        return prepare

    def decimal(field: Field[Any, Any]) -> Prepare:
        attname, slow = field.attname, generic(field)

        def prepare(row: Model) -> Any:
            value = getattr(row, attname)
            if value is None or (type(value) is Decimal and value.is_finite()):
                return value  # Django's to_python gives it back unchanged (NaN, ±inf: refused)
            return slow(row)

        return prepare

    def preparer(field: Field[Any, Any]) -> Prepare:
        if connection.vendor != "postgresql":
            return generic(field)
        if isinstance(field, JSONField) and field.encoder is None:
            return _json_preparer(field)
        # Integers: Django wraps them in psycopg's Int2/Int4/Int8 to match the column's type.
        wrap = getattr(connection.ops, "integerfield_type_map", {}).get(type(field).__name__)
        if wrap is not None and type(field).__name__ == field.get_internal_type():
            return wrapped(field, wrap)
        if type(field) is models.DecimalField:
            return decimal(field)
        types = _PASS_THROUGH.get(type(field))
        # auto_now and the like set the value in pre_save: those keep the compiler's way.
        if (
            types is None
            or getattr(field, "auto_now", False)
            or getattr(field, "auto_now_add", False)
        ):
            return generic(field)
        return plain(field, types)

    return sql, [preparer(f) for f in fields]


def insert_sql(rows: Sequence[Model]) -> tuple[str, tuple[Any, ...]]:
    """The INSERT of `rows` (one model) and its parameters: the SQL compiled once per model,
    the values prepared per call (llmcalls' call log uses it for its one-statement write)."""
    template = _templates.get(type(rows[0]))
    if template is None:
        template = _templates[type(rows[0])] = _compile(rows[0])
    sql, preparers = template
    head, values = sql.split(" VALUES ", 1)
    params = tuple(prepare(row) for row in rows for prepare in preparers)
    return f"{head} VALUES {', '.join([values] * len(rows))}", params


_row_fields: dict[type[Model], tuple[list[Field[Any, Any]], frozenset[str]]] = {}


def new_row(model: type[M], /, **values: Any) -> M:
    """`model(**values)`, built the way Django builds the rows it reads (`Model.from_db`): the
    value of every concrete field passed by position, its default where `values` has none.

    The keyword path of `Model.__init__` pays a caught KeyError for every field left to its
    default (most of a proposal's thirty) and goes through the relation's descriptor for a
    related object; this one costs a third of that (bench/README.md, submit3). A related object
    given by its field's name is cached on the row as the descriptor caches it; a name that is
    no field raises TypeError, as the constructor does.
    """
    spec = _row_fields.get(model)
    if spec is None:
        fields = list(model._meta.concrete_fields)
        names = frozenset(f.attname for f in fields) | frozenset(f.name for f in fields)
        spec = _row_fields[model] = (fields, names)
    fields, names = spec
    if not names.issuperset(values):
        unexpected = ", ".join(repr(n) for n in values if n not in names)
        raise TypeError(f"{model.__name__}() got unexpected keyword arguments: {unexpected}")
    args = []
    related = []
    for field in fields:
        if field.attname in values:
            args.append(values[field.attname])
        elif field.name in values:  # a relation given its object (name != attname)
            obj = values[field.name]
            if obj is not None and not isinstance(obj, field.remote_field.model):  # type: ignore[union-attr]
                raise ValueError(f"{field.name} must be a {field.remote_field.model.__name__}")  # type: ignore[union-attr]
            args.append(None if obj is None else getattr(obj, field.target_field.attname))  # type: ignore[attr-defined]
            related.append((field, obj))
        else:
            args.append(field.get_default())
    row = model(*args)
    for field, obj in related:
        field.set_cached_value(row, obj)  # type: ignore[attr-defined]
    return row


def server_binding_cursor(conn: Any = connection) -> CursorWrapper:
    """A cursor that sends the values apart from the SQL (PostgreSQL's extended protocol).

    Django binds on the client by default, quoting every value into the SQL text; for a
    submit's 5 KB of JSON and text that costs more, on both sides, than sending the values as
    parameters. Its statements are prepared on first use, once per connection (OPTIONS
    `prepare_threshold`, config/env.py; off with DB_PREPARED_STATEMENTS=0): PostgreSQL then
    parses and plans the INSERT once instead of on every submit. Wrapped like any Django cursor
    (database errors, query logging, execute wrappers). `conn`: another connection than this
    thread's default (llmcalls' call log writes on its side connection).
    """
    conn.ensure_connection()
    raw: Any = ServerBindingCursor(conn.connection)  # type: ignore[call-arg]  # stubs: no args
    if conn.queries_logged:
        return _PreparedDebugCursor(raw, conn)
    return conn.make_cursor(raw)


class _PreparedDebugCursor(CursorDebugWrapper):
    """Django's query log (DEBUG, assertNumQueries) for the server-binding cursor. Django logs the
    query text psycopg kept, and psycopg keeps none for a statement it runs as prepared, so the
    log would say None: it gets the SQL as sent instead, its values apart (%s placeholders)."""

    def execute(self, sql: Any, params: Any = None) -> Any:
        with self.debug_sql(sql, params):
            return CursorWrapper.execute(self, sql, params)


def insert_rows(*batches: Sequence[Model]) -> None:
    """Insert every row of every batch (each batch: rows of one model, ids already set or serial).

    Serial ids are not read back; use this only for rows nobody needs the id of right away.
    """
    batches = tuple(batch for batch in batches if batch)
    if connection.vendor != "postgresql":
        for batch in batches:
            type(batch[0])._default_manager.bulk_create(batch)
        return
    statements = [insert_sql(batch) for batch in batches]
    *ctes, (main_sql, main_params) = statements
    sql = ""
    params: tuple[Any, ...] = ()
    if ctes:
        sql = "WITH " + ", ".join(f"w{i} AS ({s})" for i, (s, _) in enumerate(ctes)) + " "
        params = tuple(p for _, ps in ctes for p in ps)
    with server_binding_cursor() as cursor:
        cursor.execute(sql + main_sql, params + main_params)
    _saved(batches)


def _saved(batches: Sequence[Sequence[Model]]) -> None:
    for batch in batches:
        for row in batch:
            row._state.adding = False
            row._state.db = connection.alias


# The same INSERT with each value cast to its column's type (the type without its length, so a
# too-long value still fails as it does in VALUES): a guarded insert selects its rows, and a
# parameter PostgreSQL has to infer the type of is inferred as text in a SELECT.
_typed_values: dict[type[Model], str] = {}


def _typed_row(model: type[Model]) -> str:
    row = _typed_values.get(model)
    if row is None:
        fields = [
            f
            for f in model._meta.concrete_fields
            if not (f.primary_key and isinstance(f, AutoField))
        ]
        casts = [re.sub(r"\(.*\)", "", f.db_type(connection) or "") for f in fields]
        row = _typed_values[model] = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
    return row


def insert_rows_if(
    guard: str, guard_params: Sequence[Any], allows: str, *batches: Sequence[Model]
) -> tuple[bool, tuple[Any, ...]]:
    """Insert every row of every batch only if the guard allows it: one statement (PostgreSQL).

    `guard` is a SELECT of one row, evaluated once before any row is written (a CTE named
    `guard`, materialized: a lock it takes is taken once); `allows` is a boolean expression over
    its columns. Run outside a transaction the statement is its own: a transaction-scoped lock
    the guard takes is held until every row is in. Returns whether the rows went in and the
    guard's row; rows as in `insert_rows`.
    """
    batches = tuple(batch for batch in batches if batch)
    ctes = [f"guard AS MATERIALIZED ({guard})"]
    params: list[Any] = list(guard_params)
    for index, batch in enumerate(batches):
        sql, batch_params = insert_sql(batch)
        head = sql.split(" VALUES ", 1)[0]
        rows = ", ".join([_typed_row(type(batch[0]))] * len(batch))
        # Names from the models and the caller's SQL; every value is a parameter.
        ctes.append(
            f"w{index} AS ({head} SELECT * FROM (VALUES {rows}) AS v "  # noqa: S608
            f"WHERE (SELECT {allows} FROM guard))"
        )
        params.extend(batch_params)
    with server_binding_cursor() as cursor:
        cursor.execute(f"WITH {', '.join(ctes)} SELECT ({allows}), * FROM guard", params)  # noqa: S608
        result = cursor.fetchone()
    if result is None:
        raise ValueError("the guard of insert_rows_if returned no row")
    inserted, *row = result
    if inserted:
        _saved(batches)
    return bool(inserted), tuple(row)


def transaction_started() -> bool:
    """Whether the current atomic block has sent anything to the database yet (PostgreSQL)."""
    if connection.vendor != "postgresql":
        return True  # elsewhere, stay inside the transaction
    status = connection.connection.info.transaction_status
    return bool(status != TransactionStatus.IDLE)
