"""Feature tables: what to encode for a domain, what is stored already, writing new files.

Vectors are stored as Parquet `fixed_size_list<float32>[d]` (read back in the views as
DuckDB `FLOAT[d]`), one file per modality and domain, keyed by (domain, item_id,
encoder_id) with a `content_hash` of the input, so a re-run re-encodes only new or changed
items. Everything streams: a domain's inputs are staged once to a temporary Parquet file and
read back in chunks, stored vectors are looked up by item id (row groups pruned on their id
ranges), and new vectors are written a row group at a time, so memory does not grow with the
size of the domain.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.schema import FEATURE_TABLES
from warehouse.sql import literal
from warehouse.store import Warehouse

log = logging.getLogger(__name__)

# encoder_id prefix of vectors that came with an imported dataset (warehouse/atomic.py)
IMPORTED_PREFIX = "imported/"

# Per modality: the input of each kept item, whether it has one, and a hash of it.
_INPUTS = {
    "text": """
        SELECT x.item_idx, x.item_id, coalesce(i.text, '') AS input, coalesce(i.text, '') <> '' AS has,
               sha256(coalesce(i.text, '')) AS content_hash
        FROM item_index x LEFT JOIN items i USING (domain, item_id) WHERE x.domain = ? ORDER BY x.item_idx""",
    # the content hashes of the item's fetched images, in the order of its URLs
    "image": """
        WITH urls AS (SELECT domain, item_id, unnest(image_urls) AS url, generate_subscripts(image_urls, 1) AS k
                      FROM items WHERE domain = ?),
        images AS (SELECT u.item_id, list(f.sha256 ORDER BY u.k) AS shas FROM urls u
                   JOIN image_fetches f ON f.url = u.url AND f.sha256 IS NOT NULL GROUP BY u.item_id)
        SELECT x.item_idx, x.item_id, coalesce(m.shas, []) AS input, len(coalesce(m.shas, [])) > 0 AS has,
               sha256(array_to_string(coalesce(m.shas, []), '|')) AS content_hash
        FROM item_index x LEFT JOIN images m USING (item_id) WHERE x.domain = ? ORDER BY x.item_idx""",
    "price": """
        SELECT x.item_idx, x.item_id, i.price AS input, i.price IS NOT NULL AS has,
               sha256(coalesce(i.price::VARCHAR, '')) AS content_hash
        FROM item_index x LEFT JOIN items i USING (domain, item_id) WHERE x.domain = ? ORDER BY x.item_idx""",
}


def domains(wh: Warehouse) -> list[str]:
    with wh.reader() as con:
        return [d for (d,) in con.execute("SELECT DISTINCT domain FROM parquet_files "
                                          "WHERE table_name = 'sequences' ORDER BY 1").fetchall()]


def image_urls(wh: Warehouse, domain: str) -> list[str]:
    """Every image URL of the domain's kept items."""
    with wh.reader() as con:
        return [u for (u,) in con.execute("SELECT DISTINCT u.url FROM item_index x JOIN items i USING (domain, item_id), "
                                          "unnest(i.image_urls) AS u(url) WHERE x.domain = ? ORDER BY 1",
                                          [domain]).fetchall()]


def stage_inputs(wh: Warehouse, domain: str, modality: str) -> Path:
    """A temporary Parquet file of the domain's kept items in index order: item_idx, item_id,
    input, has, content_hash. The caller deletes it."""
    wh.tmp_dir.mkdir(parents=True, exist_ok=True)
    path = wh.tmp_dir / f"inputs-{domain}-{modality}-{uuid.uuid4().hex}.parquet"
    params = [domain, domain] if modality == "image" else [domain]
    with wh.reader() as con:  # a short read: the file is written, the connection closed
        con.execute(f"COPY ({_INPUTS[modality]}) TO {literal(str(path))} (FORMAT parquet)", params)
    return path


def prices(inputs: Path) -> np.ndarray:
    """The staged price inputs as floats (NaN = missing)."""
    column = pq.read_table(inputs, columns=["input"]).column("input")
    return column.to_numpy(zero_copy_only=False).astype(float)


def stored(wh: Warehouse, domain: str, modality: str, damaged: dict[str, str]) -> Path | None:
    """The published feature file of a modality, or None, also when it is among `damaged`
    (`Warehouse.heal_views(domain)`: {path: problem}): its vectors are then encoded anew, which
    repairs it."""
    with wh.reader() as con:
        row = con.execute("SELECT path FROM parquet_files WHERE table_name = ? AND domain = ?",
                          [FEATURE_TABLES[modality], domain]).fetchone()
    if row is None:
        return None
    if (problem := damaged.get(str(path := wh.absolute(row[0])))) is not None:
        log.warning("%s: %s; its %s vectors are encoded anew", path, problem, modality)
        return None
    return path


def imported(wh: Warehouse, domain: str, modality: str) -> tuple[str, int, int] | None:
    """(encoder id, items, items with the feature) of the stored vectors of a modality when they
    came with an imported dataset rather than from an encoder of ours; None otherwise."""
    with wh.reader() as con:
        row = con.execute(f"SELECT any_value(encoder_id), count(*), count(*) FILTER (WHERE has_{modality}) "
                          f"FROM {FEATURE_TABLES[modality]} WHERE domain = ? AND starts_with(encoder_id, ?)",
                          [domain, IMPORTED_PREFIX]).fetchone()
    return (row[0], row[1], row[2]) if row[1] else None


def reusable(wh: Warehouse, inputs: Path, old: Path, encoder_id: str) -> tuple[int, int]:
    """(items whose stored vector is still right: same encoder, same input; rows stored)."""
    con = wh.scratch()
    try:
        return con.execute(
            f"SELECT (SELECT count(*) FROM read_parquet({literal(str(inputs))}) n JOIN read_parquet({literal(str(old))}) o "
            f"ON o.item_id = n.item_id AND o.content_hash = n.content_hash AND o.encoder_id = ?), "
            f"(SELECT count(*) FROM read_parquet({literal(str(old))}))", [encoder_id]).fetchone()
    finally:
        con.close()


def input_batches(inputs: Path, rows: int) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(inputs).iter_batches(batch_size=rows)


def previous_vectors(wh: Warehouse, old: Path, batch: pa.RecordBatch, encoder_id: str
                     ) -> dict[str, tuple[str, np.ndarray]]:
    """item_id → (content_hash, vector) stored for the batch's items under `encoder_id`; only the
    row groups whose item-id range meets the batch's are read."""
    ids = batch.column("item_id")
    con = wh.scratch()
    try:
        con.register("wanted", pa.table({"item_id": ids}))
        table = con.sql(f"SELECT o.item_id, o.content_hash, o.vector FROM read_parquet({literal(str(old))}) o "
                        f"WHERE o.item_id BETWEEN ? AND ? AND o.encoder_id = ? "
                        f"AND o.item_id IN (SELECT item_id FROM wanted)",
                        params=[min(ids.to_pylist()), max(ids.to_pylist()), encoder_id]).to_arrow_table()
    finally:
        con.close()
    vectors = vectors_of(table)
    return {item: (h, vectors[i]) for i, (item, h) in
            enumerate(zip(table.column("item_id").to_pylist(), table.column("content_hash").to_pylist()))}


def vectors_of(table: pa.Table) -> np.ndarray:
    """The `vector` column as a [rows, d] float32 matrix. The views type it FLOAT[d] when every
    domain has one width, else FLOAT[] (a list per row); a table's rows always share one width."""
    column = table.column("vector").combine_chunks()
    if len(column) == 0:
        return np.zeros((0, getattr(column.type, "list_size", 0)), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), -1)


def _table(domain: str, modality: str, item_ids, encoder_id: str, content_hashes, has: np.ndarray,
           vectors: np.ndarray) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.table({
        "domain": pa.array([domain] * len(item_ids), pa.string()),
        "item_id": pa.array(item_ids, pa.string()),
        "encoder_id": pa.array([encoder_id] * len(item_ids), pa.string()),
        "content_hash": pa.array(content_hashes, pa.string()),
        f"has_{modality}": pa.array(has, pa.bool_()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), vectors.shape[1]),
    })


class FeatureWriter:
    """A new (unpublished) Parquet file of one modality's features, a row group per `write`."""

    def __init__(self, wh: Warehouse, domain: str, modality: str):
        self.domain, self.modality = domain, modality
        self.path = wh.new_parquet_path(FEATURE_TABLES[modality], domain)
        self.writer: pq.ParquetWriter | None = None

    def write(self, item_ids, encoder_id: str, content_hashes, has: np.ndarray, vectors: np.ndarray) -> None:
        table = _table(self.domain, self.modality, item_ids, encoder_id, content_hashes, has, vectors)
        if self.writer is None:  # embeddings barely compress: spend no time on the vectors
            self.writer = pq.ParquetWriter(
                self.path, table.schema, compression={n: "NONE" if n == "vector" else "ZSTD" for n in table.schema.names},
                use_dictionary=["domain", "encoder_id"], write_statistics=["item_id"])  # item-id ranges prune look-ups
        self.writer.write_table(table)

    def __enter__(self) -> "FeatureWriter":
        return self

    def __exit__(self, kind, *_) -> None:
        if self.writer is not None:
            self.writer.close()
        if kind is not None:
            self.path.unlink(missing_ok=True)


def write(wh: Warehouse, domain: str, modality: str, item_ids: list[str], encoder_id: str,
          content_hashes: list[str], has: np.ndarray, vectors: np.ndarray) -> Path:
    """A new (unpublished) Parquet file of one modality's features for `domain`, in one go."""
    with FeatureWriter(wh, domain, modality) as writer:
        writer.write(item_ids, encoder_id, content_hashes, has, vectors)
    return writer.path


def price_encoder_row(domain: str, encoder_id: str, state: dict) -> dict:
    return {"domain": domain, "encoder_id": encoder_id, "state": json.dumps(state)}
