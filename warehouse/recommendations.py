"""The `recommendations` table: top-k items per user from a target's promoted model, with
raw and dense ids, so it joins `items`, `item_index`, `user_index` and `splits` in SQL."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from warehouse.sql import literal
from warehouse.store import Warehouse


def test_users(wh: Warehouse, domain: str) -> list[int]:
    """user_idx of every user with a test row, in the order `training.load_domain` lists them."""
    with wh.reader() as con:
        return [u for (u,) in con.execute("SELECT user_idx FROM splits WHERE domain = ? AND split = 'test' "
                                          "ORDER BY user_idx", [domain]).fetchall()]


def write(wh: Warehouse, domain: str, version: str, users: list[int], items: np.ndarray, scores: np.ndarray,
          before_test: bool) -> Path:
    """A new (unpublished) Parquet file: one row per (user, rank)."""
    n, k = items.shape
    ranked = pa.table({
        "user_idx": pa.array(np.repeat(users, k), pa.int32()),
        "rank": pa.array(np.tile(np.arange(1, k + 1), n), pa.int32()),
        "item_idx": pa.array(items.ravel(), pa.int32()),
        "score": pa.array(scores.ravel(), pa.float32())})
    path = wh.new_parquet_path("recommendations", domain)
    con = wh.scratch()
    try:
        con.register("ranked", ranked)
        with wh.reader() as live:
            con.register("users", live.sql("SELECT user_idx, user_id FROM user_index WHERE domain = ?",
                                           params=[domain]).to_arrow_table())
            con.register("catalogue", live.sql("SELECT item_idx, item_id FROM item_index WHERE domain = ?",
                                               params=[domain]).to_arrow_table())
        con.execute(f"""
            COPY (SELECT {literal(domain)} AS domain, r.user_idx, u.user_id, r.rank, r.item_idx, c.item_id,
                         r.score, {literal(version)} AS model_version,
                         {literal("before_test" if before_test else "full")} AS input
                  FROM ranked r JOIN users u USING (user_idx) JOIN catalogue c USING (item_idx)
                  ORDER BY r.user_idx, r.rank) TO {literal(str(path))} (FORMAT parquet, COMPRESSION zstd)""")
    finally:
        con.close()
    return path
