"""Feature tables: what to encode for a domain, what is stored already, writing new files.

Vectors are stored as Parquet `fixed_size_list<float32>[d]` (read back in the views as
DuckDB `FLOAT[d]`), one file per modality and domain, keyed by (domain, item_id,
encoder_id) with a `content_hash` of the input, so a re-run re-encodes only new or changed
items.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.schema import FEATURE_TABLES
from warehouse.store import Warehouse


def catalogue(wh: Warehouse, domain: str) -> pa.Table:
    """The domain's kept items in index order: item_id, text, price, image_urls."""
    with wh.reader() as con:
        return con.sql(
            "SELECT x.item_id, coalesce(i.text, '') AS text, i.price, coalesce(i.image_urls, []) AS image_urls "
            "FROM item_index x LEFT JOIN items i USING (domain, item_id) WHERE x.domain = ? "
            "ORDER BY x.item_idx", params=[domain]).to_arrow_table()


def domains(wh: Warehouse) -> list[str]:
    with wh.reader() as con:
        return [d for (d,) in con.execute("SELECT DISTINCT domain FROM parquet_files "
                                          "WHERE table_name = 'sequences' ORDER BY 1").fetchall()]


def stored(wh: Warehouse, domain: str, modality: str) -> tuple[dict[str, int], pa.Table] | None:
    """The published features of a modality: ({item_id: row}, table), or None."""
    with wh.reader() as con:
        row = con.execute("SELECT path FROM parquet_files WHERE table_name = ? AND domain = ?",
                          [FEATURE_TABLES[modality], domain]).fetchone()
    if row is None:
        return None
    table = pq.read_table(wh.home / row[0])
    return {item: i for i, item in enumerate(table.column("item_id").to_pylist())}, table


def vectors_of(table: pa.Table) -> np.ndarray:
    """The `vector` column as a [rows, d] float32 matrix. The views type it FLOAT[d] when every
    domain has one width, else FLOAT[] (a list per row); a table's rows always share one width."""
    column = table.column("vector").combine_chunks()
    if len(column) == 0:
        return np.zeros((0, getattr(column.type, "list_size", 0)), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), -1)


def write(wh: Warehouse, domain: str, modality: str, item_ids: list[str], encoder_id: str,
          content_hashes: list[str], has: np.ndarray, vectors: np.ndarray) -> Path:
    """A new (unpublished) Parquet file of one modality's features for `domain`."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    table = pa.table({
        "domain": pa.array([domain] * len(item_ids), pa.string()),
        "item_id": pa.array(item_ids, pa.string()),
        "encoder_id": pa.array([encoder_id] * len(item_ids), pa.string()),
        "content_hash": pa.array(content_hashes, pa.string()),
        f"has_{modality}": pa.array(has, pa.bool_()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()),
                                                    vectors.shape[1]),
    })
    path = wh.new_parquet_path(FEATURE_TABLES[modality], domain)
    pq.write_table(table, path, compression="zstd")
    return path


def price_encoder_row(domain: str, encoder_id: str, state: dict) -> dict:
    return {"domain": domain, "encoder_id": encoder_id, "state": json.dumps(state)}
