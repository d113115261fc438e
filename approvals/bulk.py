"""Insert rows of several tables in one round trip.

The submit path writes a proposal and its first audit events in the same transaction. On
PostgreSQL they go in one statement (data-modifying CTEs); foreign keys are deferred to the
commit, so the order inside the statement does not matter. Elsewhere, one INSERT per table.
`transaction_started` tells whether such a statement may run alone, without BEGIN and COMMIT.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import AutoField, Field, JSONField, Model, signals
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
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
# Per model: the INSERT's head ("INSERT INTO … (…)"), one row's VALUES tuple, the preparers.
_templates: dict[type[Model], tuple[str, str, list[Prepare]]] = {}

# Field classes (exactly these, not subclasses) and the value type they pass through unchanged.
_PASS_THROUGH: dict[type[Field[Any, Any]], type] = {
    models.CharField: str,
    models.TextField: str,
    models.FloatField: float,
    models.BooleanField: bool,
    models.UUIDField: uuid.UUID,
    models.DateTimeField: datetime,  # aware only (below)
    models.ForeignKey: uuid.UUID,  # a foreign key to an integer goes as an integer (below)
}


def _json_preparer(field: JSONField[Any, Any]) -> Prepare:
    attname = field.attname

    def prepare(row: Model) -> Any:
        value = getattr(row, attname)
        return None if value is None else Jsonb(value, dumps=jsonfast.dumps)

    return prepare


def _is_integer(field: Field[Any, Any]) -> bool:
    """An integer column: Django wraps its int values (Int2/Int4/Int8) to the column's type."""
    if isinstance(field, models.ForeignKey):
        return isinstance(field.target_field, models.IntegerField)
    return isinstance(field, models.IntegerField)


def _compile(row: Model) -> tuple[str, str, list[Prepare]]:
    model = type(row)
    fields = [
        f for f in model._meta.concrete_fields if not (f.primary_key and isinstance(f, AutoField))
    ]
    query = InsertQuery(model)
    query.insert_values(fields, [row])
    compiler = query.get_compiler(connection=connection)
    [(sql, _)] = compiler.as_sql()
    head, values = sql.split(" VALUES ", 1)

    def generic(field: Field[Any, Any]) -> Prepare:
        return lambda row: compiler.prepare_value(field, compiler.pre_save_val(field, row))

    def plain(field: Field[Any, Any], kind: type) -> Prepare:
        attname, slow = field.attname, generic(field)

        if kind is datetime:

            def prepare(row: Model) -> Any:
                value = getattr(row, attname)
                if value is None or (type(value) is datetime and value.tzinfo is not None):
                    return value  # what Django's preparation gives back for it, unchanged
                return slow(row)

            return prepare

        if kind is str:
            # CharField and TextField give any str back unchanged (to_python), a subclass too:
            # a choice's enum member (Proposal.State) or a SafeString.

            def prepare_text(row: Model) -> Any:
                value = getattr(row, attname)
                if value is None or isinstance(value, str):
                    return value
                return slow(row)

            return prepare_text

        def prepare_plain(row: Model) -> Any:
            value = getattr(row, attname)
            if value is None or type(value) is kind:
                return value  # what Django's preparation gives back for it, unchanged
            return slow(row)

        return prepare_plain

    def integer(field: Field[Any, Any]) -> Prepare:
        # The wrapper Django's preparation puts around an int of this column, asked once.
        probe = compiler.prepare_value(field, 7)
        wrap = type(probe)
        if not (issubclass(wrap, int) and probe == 7 and wrap(7) == probe):
            return generic(field)
        attname, slow = field.attname, generic(field)

        def prepare(row: Model) -> Any:
            value = getattr(row, attname)
            if value is None:
                return None  # what Django's preparation gives for it
            if type(value) is int:
                return wrap(value)
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
        if type(field) is models.DecimalField:
            return decimal(field)
        # auto_now and the like set the value in pre_save: those keep the compiler's way.
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            return generic(field)
        if _is_integer(field):
            return integer(field)
        kind = _PASS_THROUGH.get(type(field))
        if kind is None:
            return generic(field)
        return plain(field, kind)

    return head, values, [preparer(f) for f in fields]


def insert_sql(rows: Sequence[Model]) -> tuple[str, tuple[Any, ...]]:
    """The INSERT of `rows` (one model) and its parameters: the SQL compiled once per model,
    the values prepared per call (llmcalls' call log uses it for its one-statement write)."""
    template = _templates.get(type(rows[0]))
    if template is None:
        template = _templates[type(rows[0])] = _compile(rows[0])
    head, values, preparers = template
    if len(rows) == 1:
        [row] = rows
        return f"{head} VALUES {values}", tuple([prepare(row) for prepare in preparers])
    params = tuple([prepare(row) for row in rows for prepare in preparers])
    return f"{head} VALUES {', '.join([values] * len(rows))}", params


# Per model: its concrete fields as (field, attname, name, default getter), the names a row may be
# given, and whether a row can be filled in directly (below).
_RowSpec = tuple[list[tuple["Field[Any, Any]", str, str, Callable[[], Any]]], frozenset[str], bool]
_row_fields: dict[type[Model], _RowSpec] = {}


def _row_spec(model: type[Model]) -> _RowSpec:
    spec = _row_fields.get(model)
    if spec is None:
        fields = list(model._meta.concrete_fields)
        names = frozenset(f.attname for f in fields) | frozenset(f.name for f in fields)
        # Model.__init__ stores each positional value with setattr(row, attname, value): for a
        # plain field (DeferredAttribute, no __set__) and a foreign key's id on a new row
        # (ForeignKeyDeferredAttribute, which only drops a cached object first) that is the
        # instance's __dict__ entry. Any other descriptor (a file field's, a property) keeps
        # the constructor.
        direct = (
            all(
                type(inspect.getattr_static(model, f.attname, None))
                in (DeferredAttribute, ForeignKeyDeferredAttribute)
                for f in fields
            )
            and type(model).__call__ is type.__call__
            and model.__init__ is Model.__init__
        )
        spec = _row_fields[model] = (
            [(f, f.attname, f.name, f._get_default) for f in fields],  # type: ignore[attr-defined]
            names,
            direct,
        )
    return spec


def _no_init_listeners(model: type[Model]) -> bool:
    """Nothing listens to the model's pre_init or post_init (none to any model, the usual case,
    is one look)."""
    pre, post = signals.pre_init, signals.post_init
    if not pre.receivers and not post.receivers:
        return True
    return not (pre.has_listeners(model) or post.has_listeners(model))


def new_row(model: type[M], /, **values: Any) -> M:
    """`model(**values)`, built the way Django builds the rows it reads (`Model.from_db`): the
    value of every concrete field passed by position, its default where `values` has none.

    The keyword path of `Model.__init__` pays a caught KeyError for every field left to its
    default (most of a proposal's thirty) and goes through the relation's descriptor for a
    related object; this one costs a third of that (bench/README.md, submit3). When nothing
    listens to the model's `pre_init`/`post_init` and every field is stored as Model.__init__
    would store it on a new row (`_row_spec`), the row's state and values are set directly,
    without the constructor's setattr per field and its two signal sends (bench/README.md,
    "Helper submit, fifth session"). A related object given by its field's name is cached on
    the row as the descriptor caches it; a name that is no field raises TypeError, as the
    constructor does.
    """
    fields, names, direct = _row_spec(model)
    if not names.issuperset(values):
        unexpected = ", ".join(repr(n) for n in values if n not in names)
        raise TypeError(f"{model.__name__}() got unexpected keyword arguments: {unexpected}")
    args = []
    related = []
    for field, attname, name, default in fields:
        if attname in values:
            args.append(values[attname])
        elif name in values:  # a relation given its object (name != attname)
            obj = values[name]
            if obj is not None and not isinstance(obj, field.remote_field.model):  # type: ignore[union-attr]
                raise ValueError(f"{name} must be a {field.remote_field.model.__name__}")  # type: ignore[union-attr]
            args.append(None if obj is None else getattr(obj, field.target_field.attname))  # type: ignore[attr-defined]
            related.append((field, obj))
        else:
            args.append(default())
    if direct and _no_init_listeners(model):
        row = model.__new__(model)
        state = row.__dict__
        state["_state"] = ModelState()
        state.update(zip([attname for _, attname, _, _ in fields], args, strict=True))
    else:
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
    if conn is connection:  # the proxy looks the thread's connection up on every attribute
        conn = connections[DEFAULT_DB_ALIAS]
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
    alias = connection.alias
    for batch in batches:
        for row in batch:
            row._state.adding = False
            row._state.db = alias


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


@contextmanager
def sent_with_commit() -> Iterator[None]:
    """Run the block's statements as the last of the outermost atomic block around it and send
    them with its COMMIT, in one round trip (PostgreSQL's pipeline mode): for the writes that
    end a transaction whose results nothing reads before the commit (a statement that returns
    rows still waits for them). The atomic block then finds the transaction committed and runs
    its on_commit callbacks as usual. An error in the block's statements is raised at the end
    of the block, translated as Django translates it, and the atomic block rolls back. Inside a
    savepoint, in a block marked for rollback, or elsewhere than PostgreSQL, the block runs as
    it is and the atomic block commits.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    raw = conn.connection
    if not (
        conn.vendor == "postgresql"
        and raw is not None
        and len(conn.atomic_blocks) == 1
        and conn.commit_on_exit
        and not conn.needs_rollback
    ):
        yield
        return
    with conn.wrap_database_errors, raw.pipeline():
        yield
        if not conn.needs_rollback:
            with conn.cursor() as cursor:
                # Leaving the pipeline sends it all, then waits for the answers (one Sync).
                cursor.execute("COMMIT")


def transaction_started() -> bool:
    """Whether the current atomic block has sent anything to the database yet (PostgreSQL);
    outside one, whether a transaction is open (not while nothing is connected yet)."""
    if connection.vendor != "postgresql":
        return True  # elsewhere, stay inside the transaction
    raw = connection.connection
    if raw is None:
        return False
    status = raw.info.transaction_status
    return bool(status != TransactionStatus.IDLE)
