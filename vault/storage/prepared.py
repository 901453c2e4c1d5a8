"""Prepared statements for the hot path: a Core statement compiled once, run on the driver.

SQLAlchemy's per-statement work (building an execution context, processing every
parameter, generating the statement's cache key, wrapping the cursor in a result) costs
about 14 µs a statement on SQLite, as much as SQLite's own work for the small statements a
checkout sends (issue 7, workload W1), and on PostgreSQL, where a team server's processes,
its engineers and the database share the cores, a share of each checkout's CPU of the same
order as psycopg's own (issue 14, W16). A ``Prepared`` statement does that work once: it
compiles the statement for the connection's dialect, keeps the SQL text, the order (SQLite:
positional) or the names (psycopg: ``%(name)s``) of its parameters and the type processors
SQLAlchemy itself would apply (through the public ``bind_processor`` / ``result_processor``
of each type), and then runs on the connection's own driver cursor, inside the transaction
SQLAlchemy began. Any other dialect gets a plain ``Connection.execute``.

What stays the same either way, and is tested on both engines:

* the values bound and returned are those of ``Connection.execute`` (same processors);
* driver errors are raised as SQLAlchemy's exceptions (SQLite: ``DBAPIError.instance``;
  psycopg: through the connection's own handling, so that a lost server connection
  invalidates it and the pool as ``Connection.execute`` would), so ``Store``'s error mapping
  applies unchanged;
* the engine's ``before_cursor_execute`` listeners are called with the statement, so
  what watches statements (tests counting them, fault injection, the benchmark's cost
  counts) sees these too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


class _Compiled:
    """One statement compiled for a dialect: its text, parameters, defaults and processors."""

    __slots__ = ("binds", "defaults", "named", "order", "results", "sql")

    def __init__(self, statement: Executable, dialect: Dialect, keys: Sequence[str] | None) -> None:
        compiled = cast(ClauseElement, statement).compile(
            dialect=dialect, column_keys=list(keys) if keys is not None else None
        )
        assert isinstance(compiled, SQLCompiler)
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("a prepared statement takes no expanding (IN) or literal-execute parameters")
        self.sql: str = compiled.string
        if compiled.positiontup is not None:  # SQLite: ``?`` in this order
            self.order: tuple[str, ...] = tuple(compiled.positiontup)
            self.named: tuple[str, ...] | None = None
        else:  # psycopg: ``%(name)s``, under the name the compiler wrote (escaped if it had to)
            escaped: Mapping[str, str] = compiled.escaped_bind_names or {}
            self.order = tuple(compiled.binds)
            self.named = tuple(escaped.get(name, name) for name in self.order)
        self.defaults = {name: bind.value for name, bind in compiled.binds.items() if bind.value is not None}
        self.binds: dict[str, Processor] = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect) for name, bind in compiled.binds.items()
        }
        # The columns of a SELECT whose values SQLAlchemy would convert (times, booleans).
        columns = getattr(statement, "selected_columns", ())
        self.results: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(
            (i, p)
            for i, p in enumerate(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
            if p is not None
        )

    def rows(self, fetched: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Fetched rows with the result processors SQLAlchemy would apply (times, booleans)."""
        if not self.results:
            return fetched
        out = []
        for r in fetched:
            row = list(r)
            for i, process in self.results:
                if row[i] is not None:
                    row[i] = process(row[i])
            out.append(tuple(row))
        return out

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        out = []
        for name in self.order:
            if name in values:
                value = values[name]
            elif name in self.defaults:
                value = self.defaults[name]
            else:
                raise exc.ArgumentError(f"a value is required for bind parameter {name!r}")
            process = self.binds[name]
            out.append(process(value) if process is not None and value is not None else value)
        return tuple(out) if self.named is None else dict(zip(self.named, out, strict=True))


class Prepared:
    """A Core statement run with ``all``, ``run`` or ``run_many`` (see the module docstring).

    ``keys`` names the columns an INSERT sets (the others take their defaults in the
    database), as ``Connection.execute`` would infer from its parameters.
    """

    __slots__ = ("_by_dialect", "keys", "statement")

    def __init__(self, statement: Executable, keys: Iterable[str] | None = None) -> None:
        self.statement = statement
        self.keys = tuple(keys) if keys is not None else None
        self._by_dialect: dict[str, _Compiled] = {}

    def __repr__(self) -> str:
        return f"Prepared({self.statement!s})"

    def all(self, conn: Connection, values: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows of a SELECT, as tuples."""
        compiled = self._compiled(conn)
        if compiled is None:
            return [tuple(r) for r in conn.execute(self.statement, dict(values or {}))]
        return compiled.rows(self._cursor(conn, compiled, compiled.parameters(values or {})).fetchall())

    def returned(self, conn: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Execute the statement: its rows if it returns any (a SELECT's, a RETURNING's), else []."""
        compiled = self._compiled(conn)
        if compiled is None:
            result = conn.execute(self.statement, dict(values))
            return [tuple(r) for r in result] if result.returns_rows else []
        cursor = self._cursor(conn, compiled, compiled.parameters(values))
        return compiled.rows(cursor.fetchall()) if cursor.description is not None else []

    def run(self, conn: Connection, values: Mapping[str, Any] | None = None) -> None:
        """Execute a statement that returns no rows."""
        compiled = self._compiled(conn)
        if compiled is None:
            conn.execute(self.statement, dict(values or {}))
            return
        self._cursor(conn, compiled, compiled.parameters(values or {}))

    def run_many(self, conn: Connection, values: Sequence[Mapping[str, Any]]) -> None:
        """Execute a statement once per parameter set (none: nothing is sent)."""
        if not values:
            return
        compiled = self._compiled(conn)
        if compiled is None:
            conn.execute(self.statement, [dict(v) for v in values])
            return
        for one in values:
            self._cursor(conn, compiled, compiled.parameters(one))

    def _compiled(self, conn: Connection) -> _Compiled | None:
        dialect = conn.dialect
        name = dialect.name if dialect.name == "sqlite" else f"{dialect.name}+{dialect.driver}"
        compiled = self._by_dialect.get(name)
        if compiled is None:
            if name not in ("sqlite", "postgresql+psycopg"):
                return None
            compiled = self._by_dialect[name] = _Compiled(self.statement, dialect, self.keys)
        return compiled

    @staticmethod
    def _cursor(conn: Connection, compiled: _Compiled, parameters: tuple[Any, ...] | dict[str, Any]) -> Any:
        if compiled.named is None:
            return on_driver(conn, compiled.sql, cast(tuple[Any, ...], parameters))
        return _on_psycopg(conn, compiled.sql, cast(dict[str, Any], parameters))


Step = tuple[Prepared, Mapping[str, Any]]


def pipelined(conn: Connection, steps: Sequence[Step]) -> list[list[tuple[Any, ...]]]:
    """Run ``steps`` in order, each a statement of its own, and return each one's rows ([] for
    a statement that returns none).

    On psycopg they travel in one round trip (psycopg's pipeline mode): the server still runs
    them one after another, each with its own snapshot under read committed, so a step reads
    what the steps before it wrote and what was committed before it began, as it would one
    round trip each; no step's values may depend on an earlier step's rows. A step that fails
    fails the rest, and the unit of work rolls back, as it would. The commit stays the unit's:
    its listeners, its error handling and its rollback are those of every unit. Elsewhere
    (SQLite, other dialects), and for a single step, each step runs as ``returned`` would."""
    compiled = [prepared._compiled(conn) for prepared, _ in steps]
    if len(steps) < 2 or any(c is None or c.named is None for c in compiled):
        return [prepared.returned(conn, values) for prepared, values in steps]
    driver = conn.connection.driver_connection
    assert driver is not None
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursors: list[Any] = []
    sql, parameters = "", cast(dict[str, Any], {})
    try:
        with driver.pipeline():
            for (_, values), one in zip(steps, compiled, strict=True):
                assert one is not None
                sql, parameters = one.sql, cast(dict[str, Any], one.parameters(values))
                cursor = driver.cursor()
                for listener in conn.dispatch.before_cursor_execute:
                    listener(conn, cursor, sql, parameters, None, False)
                cursor.execute(sql, parameters)
                cursors.append(cursor)
    except dbapi_error as error:  # a step's, raised when the pipeline was sent
        conn._handle_dbapi_exception(error, sql, parameters, None, None)
    return [
        one.rows(cursor.fetchall()) if cursor.description is not None else []
        for one, cursor in zip(compiled, cursors, strict=True)
        if one is not None
    ]


def _on_psycopg(conn: Connection, sql: str, parameters: dict[str, Any]) -> Any:
    """Run ``sql`` on the psycopg connection's own cursor, in its current transaction: the
    listeners first, and a driver error handled by the connection as ``Connection.execute``
    does (wrapped as SQLAlchemy's; a lost server connection invalidated). Returns the cursor."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        for listener in conn.dispatch.before_cursor_execute:
            listener(conn, cursor, sql, parameters, None, False)
        cursor.execute(sql, parameters)
    except dbapi_error as error:
        conn._handle_dbapi_exception(error, sql, parameters, cursor, None)
    return cursor


def on_driver(conn: Connection, sql: str, parameters: Sequence[Any] = ()) -> Any:
    """Run ``sql`` on the SQLite connection's own cursor, in its current transaction:
    the engine's ``before_cursor_execute`` listeners are called first, and a driver
    error is raised as SQLAlchemy's exception for it. Returns the cursor."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    cursor = driver.cursor()
    for listener in conn.dispatch.before_cursor_execute:
        listener(conn, cursor, sql, parameters, None, False)
    try:
        cursor.execute(sql, parameters)
    except sqlite3.Error as error:
        raise exc.DBAPIError.instance(sql, parameters, error, sqlite3.Error) from error
    return cursor
