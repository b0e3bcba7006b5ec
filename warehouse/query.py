"""Ad hoc read-only queries (`ant sql`): one statement that can read the warehouse and nothing else.

Defence in depth, each layer enough on its own for the cases it covers:
- the statement is parsed by DuckDB itself and must be exactly one SELECT (which covers WITH,
  FROM-first, VALUES, DESCRIBE, SHOW and SUMMARIZE) or an EXPLAIN [ANALYZE] of one: no COPY,
  ATTACH, CREATE (temporary or not), INSTALL/LOAD, SET, PRAGMA, CALL or CHECKPOINT;
- the connection is read-only, external access is off except for reading the warehouse's own
  Parquet directory, extensions never install or load, and the configuration is locked, so
  the query cannot turn any of that back on.
"""
from __future__ import annotations

import re

import duckdb

from warehouse.store import Warehouse, WarehouseError

ALLOWED = "SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN"
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(ANALY[SZ]E\s+)?", re.IGNORECASE)


class QueryRefused(WarehouseError):
    """A query `ant sql` will not run."""


def check(sql: str) -> None:
    """Refuse anything but exactly one read-only statement."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"cannot parse the query: {str(exc).strip().splitlines()[0]}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"give exactly one statement (got {len(statements)}); `ant sql` is read-only")
    statement = statements[0]
    if statement.type == duckdb.StatementType.EXPLAIN:
        inner = duckdb.extract_statements(_EXPLAIN.sub("", statement.query, count=1))
        if len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT:
            return
    elif statement.type == duckdb.StatementType.SELECT:
        return
    raise QueryRefused(f"`ant sql` is read-only: a {statement.type.name} statement is refused; "
                       f"use {ALLOWED}")


def read_only_query(wh: Warehouse, sql: str) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of one read-only query."""
    check(sql)
    with wh.reader() as con:
        con.execute("SET allowed_directories = ?", [[str(wh.parquet_dir) + "/"]])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            cursor = con.execute(sql)
            return [d[0] for d in cursor.description or []], cursor.fetchall()
        except duckdb.Error as exc:  # DuckDB's first line says what is wrong; the rest repeats the query
            raise QueryRefused(str(exc).strip().splitlines()[0]) from exc
