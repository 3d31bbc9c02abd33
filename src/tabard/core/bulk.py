"""Many rows in one INSERT, on every backend, without the per-row cost of either.

On SQLite, pysqlite's `executemany` gives up and retakes the GIL around every row it steps. The
aiosqlite thread running it then waits for the event loop's thread at each row (up to the 5 ms
switch interval while requests keep that thread busy): a heartbeat flush of 3,000 rows took 4 to
9 s under load where it takes 0.1 s idle, and the buffer fell behind. So on SQLite the rows travel
as one JSON array, unpacked by `json_each` in a single INSERT … SELECT: one step, one hand-off.
Each value is first converted by its column type's own bind processor, so what is stored is
byte for byte what `executemany` would have stored. Elsewhere (asyncpg pipelines `executemany`
on the event loop itself) the rows go through `executemany` with a statement compiled once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Insert, Table, bindparam, func, literal_column, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import ColumnClause

# Builds the dialect's INSERT into its final form (an ON CONFLICT clause, say).
Finish = Callable[[Any], Insert]
_ROWS = "rows"


def _as_is(statement: Any) -> Insert:
    result: Insert = statement
    return result


class BulkInsert:
    """An INSERT of `columns` into `table`, run for a batch of rows with `run`."""

    def __init__(self, table: Table, columns: Sequence[str], finish: Finish = _as_is) -> None:
        self.table = table
        self.columns = tuple(columns)
        self._finish = finish
        self._statements: dict[str, Insert] = {}
        self._processors: dict[str, list[Callable[[Any], Any] | None]] = {}

    async def run(self, session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        dialect = session.get_bind().dialect
        statement = self._statement(dialect.name)
        if dialect.name == "sqlite":
            await session.execute(statement, {_ROWS: self._json_rows(rows, dialect)})
        else:
            await session.execute(statement, list(rows))

    def _statement(self, dialect: str) -> Insert:
        statement = self._statements.get(dialect)
        if statement is None:
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            base = insert(self.table)
            if dialect == "sqlite":
                base = base.from_select(self.columns, self._json_source())
            statement = self._statements[dialect] = self._finish(base)
        return statement

    def _json_source(self) -> Any:
        """SELECT json_extract(value, '$[i]') … FROM json_each(:rows) WHERE true (SQLite needs
        the WHERE to tell an upsert's ON CONFLICT from a join constraint)."""
        value: ColumnClause[Any] = literal_column("value")
        fields = [
            func.json_extract(value, f"$[{position}]").label(name)
            for position, name in enumerate(self.columns)
        ]
        return select(*fields).select_from(func.json_each(bindparam(_ROWS))).where(true())

    def _json_rows(self, rows: Sequence[Mapping[str, Any]], dialect: Dialect) -> str:
        processors = self._processors.get(dialect.name)
        if processors is None:
            processors = self._processors[dialect.name] = [
                self.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in self.columns
            ]
        pairs = list(zip(self.columns, processors, strict=True))
        converted = [
            [row[name] if process is None else process(row[name]) for name, process in pairs]
            for row in rows
        ]
        return json.dumps(converted, separators=(",", ":"), allow_nan=False)
