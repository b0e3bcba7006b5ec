"""Ad hoc read-only queries (`ant sql`): one statement that can read the warehouse and nothing else.

Defence in depth, each layer enough on its own for the cases it covers:
- the statement is parsed by DuckDB itself and must be exactly one SELECT (which covers WITH,
  FROM-first, VALUES, DESCRIBE, SHOW and SUMMARIZE) or an EXPLAIN [ANALYZE] of one: no COPY,
  ATTACH, CREATE (temporary or not), INSTALL/LOAD, SET, PRAGMA, CALL or CHECKPOINT;
- no table function that reads files other than Parquet (`read_blob`, `read_text`, `read_csv`,
  `read_json`, `glob`, ...): DuckDB lets a connection read its own database file with them;
- the connection is read-only (the file is never written, a copied or read-only home is read
  through temporary views), external access is off except for reading the warehouse's own
  Parquet directory, extensions never install or load, the query runs under a memory limit,
  and the configuration is locked, so the query cannot turn any of that back on;
- rows are streamed, at most `max_rows` of them unless the caller asks for all.
"""
from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

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
            return _no_file_readers(inner[0].query)
    elif statement.type == duckdb.StatementType.SELECT:
        return _no_file_readers(statement.query)
    raise QueryRefused(f"`ant sql` is read-only: a {statement.type.name} statement is refused; "
                       f"use {ALLOWED}")


def _table_functions(node, found: list[str]) -> list[str]:
    if isinstance(node, dict):
        if node.get("type") == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
            found.append(str(node["function"].get("function_name", "")).lower())
        for value in node.values():
            _table_functions(value, found)
    elif isinstance(node, list):
        for value in node:
            _table_functions(value, found)
    return found


def _no_file_readers(sql: str) -> None:
    """Refuse a SELECT whose table functions read files other than Parquet."""
    tree = json.loads(duckdb.connect().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    readers = [f for f in _table_functions(tree, []) if FILE_READER.match(f) and f not in PARQUET_READERS]
    if readers:
        raise QueryRefused(f"`ant sql` reads the warehouse's tables and views (and read_parquet of its files): "
                           f"{', '.join(sorted(set(readers)))} is refused")


FILE_READER = re.compile(r"^(read_|glob$|sniff_csv$)")
PARQUET_READERS = {"read_parquet"}


@contextlib.contextmanager
def read_only_query(wh: Warehouse, sql: str, memory_limit: str, max_rows: int | None
                    ) -> Iterator[tuple[list[str], Iterator[tuple]]]:
    """(column names, rows streamed in batches) of one read-only query, at most `max_rows`
    rows (None: all); `memory_limit` bounds what DuckDB holds for it."""
    check(sql)
    with wh.reader(write=False) as con:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute("SET allowed_directories = ?", [[str(wh.parquet_dir) + "/"]])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            cursor = con.execute(sql)
        except duckdb.Error as exc:  # DuckDB's first line says what is wrong; the rest repeats the query
            raise QueryRefused(str(exc).strip().splitlines()[0]) from exc

        def rows() -> Iterator[tuple]:
            left = max_rows
            while left is None or left > 0:
                try:
                    batch = cursor.fetchmany(FETCH_ROWS if left is None else min(FETCH_ROWS, left))
                except duckdb.Error as exc:
                    raise QueryRefused(str(exc).strip().splitlines()[0]) from exc
                if not batch:
                    return
                yield from batch
                left = None if left is None else left - len(batch)

        yield [d[0] for d in cursor.description or []], rows()


FETCH_ROWS = 2048  # rows fetched at once while streaming
