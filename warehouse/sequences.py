"""Clean interactions → per-user sequences and the leave-one-out split, all in DuckDB SQL.

Filtering follows the paper (ant-method.md): drop interactions whose item has no metadata,
keep the earliest of repeated (user, item) pairs, then iterate k-core on users and items
until nothing changes. The k-core runs on integer codes (ranks of the sorted raw ids), which
is several times faster than grouping strings. Final indices are dense ranks of the sorted
raw ids among the kept users/items (1-based; 0 is padding), so the same data always gets
the same indices. Sequences are ordered by time, ties broken by item id.

Reads the `parsed_reviews` and `parsed_items` temp tables of `warehouse.parse`.
"""
from __future__ import annotations

import logging

import duckdb

from warehouse.sql import literal

log = logging.getLogger(__name__)


def filter_interactions(con: duckdb.DuckDBPyConnection, k: int) -> int:
    """Create temp tables `item_codes`, `user_codes` and `kept(u, i, ts, time)`: each distinct
    (user, item) pair at its first review, `time` at the release's precision; returns k-core rounds."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE item_codes AS
        SELECT item_id, row_number() OVER (ORDER BY item_id)::INTEGER AS code
        FROM (SELECT DISTINCT item_id FROM parsed_reviews WHERE reason IS NULL
              AND item_id IN (SELECT item_id FROM parsed_items WHERE reason IS NULL))""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE user_codes AS
        SELECT user_id, row_number() OVER (ORDER BY user_id)::INTEGER AS code
        FROM (SELECT DISTINCT user_id FROM parsed_reviews WHERE reason IS NULL)""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE kept AS
        SELECT u.code AS u, i.code AS i, min(r.ts) AS ts, min(r.time) AS time
        FROM parsed_reviews r JOIN item_codes i USING (item_id) JOIN user_codes u USING (user_id)
        WHERE r.reason IS NULL
        GROUP BY u.code, i.code""")
    rounds, before = 0, con.execute("SELECT count(*) FROM kept").fetchone()[0]
    while True:
        rounds += 1
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE kept AS SELECT * FROM kept
            WHERE u NOT IN (SELECT u FROM kept GROUP BY u HAVING count(*) < {int(k)})
              AND i NOT IN (SELECT i FROM kept GROUP BY i HAVING count(*) < {int(k)})""")
        after = con.execute("SELECT count(*) FROM kept").fetchone()[0]
        log.debug("k-core round %d removed %d interactions", rounds, before - after)
        if after == before:
            return rounds
        before = after


def _index_sql(domain: str, codes: str, column: str, kept_column: str) -> str:
    return (f"SELECT {literal(domain)} AS domain, {column}_id, "
            f"row_number() OVER (ORDER BY code)::INTEGER AS {column}_idx, code "
            f"FROM {codes} WHERE code IN (SELECT DISTINCT {kept_column} FROM kept)")


def build_indices(con: duckdb.DuckDBPyConnection, domain: str) -> None:
    """Create temp tables `item_index` and `user_index` (raw id, 1-based idx, code)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE item_index AS {_index_sql(domain, 'item_codes', 'item', 'i')}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE user_index AS {_index_sql(domain, 'user_codes', 'user', 'u')}")


def item_index_sql() -> str:
    return "SELECT domain, item_id, item_idx FROM item_index ORDER BY item_idx"


def user_index_sql() -> str:
    return "SELECT domain, user_id, user_idx FROM user_index ORDER BY user_idx"


def sequences_sql(domain: str) -> str:
    return f"""
        SELECT {literal(domain)} AS domain, ux.user_idx,
               list(ix.item_idx ORDER BY k.time, k.i) AS item_idxs,  -- full precision; ties by item
               list(k.ts ORDER BY k.time, k.i) AS timestamps,
               count(*)::INTEGER AS length
        FROM kept k
        JOIN item_index ix ON ix.code = k.i
        JOIN user_index ux ON ux.code = k.u
        GROUP BY ux.user_idx ORDER BY ux.user_idx"""


def splits_sql(sequences: str) -> str:
    """Leave-one-out: per user with at least 3 items, one row each for train, valid, test.

    `history` is every earlier item (models keep the last L); the train row's
    `history + [target]` is the whole training sequence."""
    return f"""
        WITH s AS (SELECT domain, user_idx, item_idxs AS x, length AS n
                   FROM read_parquet({literal(sequences)}) WHERE length >= 3)
        SELECT domain, user_idx, 'train' AS split, x[1:n - 3] AS history, x[n - 2] AS target FROM s
        UNION ALL
        SELECT domain, user_idx, 'valid', x[1:n - 2], x[n - 1] FROM s
        UNION ALL
        SELECT domain, user_idx, 'test', x[1:n - 1], x[n] FROM s
        ORDER BY user_idx, split"""
