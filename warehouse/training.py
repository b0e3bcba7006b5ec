"""A domain's training inputs as plain arrays: feature tables and leave-one-out splits.

Arrays only (NumPy), so that the model code never touches the database; row 0 of each
feature table is the padding item. Loads one domain at a time, only the modalities asked for.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from warehouse.features import vectors_of
from warehouse.schema import FEATURE_TABLES
from warehouse.store import Warehouse, WarehouseError


@dataclass(frozen=True)
class ModalityCoverage:
    """How much of a domain's catalogue has one modality."""
    dim: int | None    # feature width; None when the domain has no rows for it at all
    items: int         # items with the feature
    catalogue: int     # kept items

    @property
    def present(self) -> bool:
        return self.items > 0


def fingerprint(wh: Warehouse, domain: str) -> str:
    with wh.reader() as con:
        row = con.execute("SELECT fingerprint FROM domains WHERE domain = ?", [domain]).fetchone()
    if row is None:
        raise WarehouseError(f"domain {domain!r} is not in the warehouse at {wh.home}: "
                             f"run `ant ingest` (or `ant import-atomic`) first")
    return row[0]


def encoder_ids(wh: Warehouse, domain: str, modalities: list[str]) -> dict[str, str]:
    with wh.reader() as con:
        return {m: con.execute(f"SELECT any_value(encoder_id) FROM {FEATURE_TABLES[m]} WHERE domain = ?",
                               [domain]).fetchone()[0] for m in modalities}


def coverage(wh: Warehouse, domain: str) -> dict[str, ModalityCoverage]:
    """Each modality's width and how many kept items have it."""
    fingerprint(wh, domain)  # an unknown domain fails here, saying so
    out = {}
    with wh.reader() as con:
        catalogue = con.execute("SELECT count(*) FROM item_index WHERE domain = ?", [domain]).fetchall()[0][0]
        for m, table in FEATURE_TABLES.items():
            dim, items = con.execute(
                f"SELECT max(len(f.vector)), count(*) FILTER (WHERE f.has_{m}) FROM item_index x "
                f"JOIN {table} f USING (domain, item_id) WHERE x.domain = ?", [domain]).fetchall()[0]
            out[m] = ModalityCoverage(dim, items, catalogue)
    return out


def load_domain(wh: Warehouse, domain: str, dims: dict[str, int]) -> dict:
    """{"features": {m: [n+1, d] float32}, "has": {m: [n+1] bool}, "n_items", "train": [seq],
    "valid": [(history, target)], "test": [(history, target)]}, for the modalities of `dims`.

    A modality the domain has no rows for comes as zeros of the asked width (has = false): a
    model pre-trained with it can still run on the domain."""
    fingerprint(wh, domain)
    with wh.reader() as con:
        # fetchall: an unfinished execute() result would block the con.sql() below
        n_items = con.execute("SELECT count(*) FROM item_index WHERE domain = ?", [domain]).fetchall()[0][0]
        features, has = {}, {}
        for m, dim in dims.items():
            table = con.sql(f"SELECT x.item_idx, f.vector, f.has_{m} AS has "
                            f"FROM item_index x JOIN {FEATURE_TABLES[m]} f USING (domain, item_id) "
                            f"WHERE x.domain = ? ORDER BY x.item_idx", params=[domain]).to_arrow_table()
            matrix = np.zeros((n_items + 1, dim), dtype=np.float32)
            flags = np.zeros(n_items + 1, dtype=bool)
            if table.num_rows:
                vectors = vectors_of(table)
                if vectors.shape[1] != dim:
                    raise WarehouseError(f"{domain}: {m} features are {vectors.shape[1]} wide, the model "
                                         f"expects {dim}; encode every domain with the same {m} encoder")
                idx = table.column("item_idx").to_numpy()
                matrix[idx] = vectors
                flags[idx] = table.column("has").to_numpy(zero_copy_only=False)
            features[m], has[m] = matrix, flags
        rows = con.execute("SELECT split, history, target FROM splits WHERE domain = ? ORDER BY user_idx",
                           [domain]).fetchall()
    split: dict[str, list] = {"train": [], "valid": [], "test": []}
    for name, history, target in rows:
        split[name].append((np.asarray(history, dtype=np.int64), int(target)))
    return {"features": features, "has": has, "n_items": n_items,
            "train": [np.append(h, t) for h, t in split["train"]],
            "valid": split["valid"], "test": split["test"]}


def catalogue(wh: Warehouse, domain: str) -> list[tuple[str, str | None]]:
    """(item_id, title) of each item, position = item_idx - 1."""
    with wh.reader() as con:
        return con.execute("SELECT x.item_id, i.title FROM item_index x LEFT JOIN items i USING (domain, item_id) "
                           "WHERE x.domain = ? ORDER BY x.item_idx", [domain]).fetchall()
