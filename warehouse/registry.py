"""The model registry: `models` (every trained version, with lineage and metrics) and
`promotions` (which version serves each target, and why).

Artifact paths are stored relative to ANT_HOME, so a moved or copied home keeps working;
`path` in the records returned here is absolute again.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from warehouse.store import Warehouse, WarehouseError, upsert

COLUMNS = ("version", "kind", "target", "method", "seed", "path", "parent", "lineage", "valid", "test",
           "training", "flow_run_id", "created_at")
JSON_COLUMNS = ("lineage", "valid", "test", "training")


def register(wh: Warehouse, version: str, kind: str, path: Path, lineage: dict, *, target: str | None = None,
             method: str | None = None, seed: int | None = None, parent: str | None = None,
             valid: dict | None = None, test: dict | None = None, training: dict | None = None,
             flow_run_id: str | None = None) -> None:
    """Record a trained version once; registering it again changes nothing.

    `training` summarises the fit (best_epoch, epochs_run, stopped_by, seconds)."""
    with wh.writer() as con:
        con.begin()
        if con.execute("SELECT count(*) FROM models WHERE version = ?", [version]).fetchall()[0][0]:
            con.rollback()
            return
        upsert(con, "models", {
            "version": version, "kind": kind, "target": target, "method": method, "seed": seed,
            "path": wh.relative(path), "parent": parent, "lineage": json.dumps(lineage, sort_keys=True),
            "valid": json.dumps(valid) if valid else None, "test": json.dumps(test) if test else None,
            "training": json.dumps(training) if training else None, "flow_run_id": flow_run_id, "created_at": datetime.now(timezone.utc)})
        con.commit()


def _rows(wh: Warehouse, where: str = "", params: list | None = None) -> list[dict]:
    if not wh.db_path.exists():
        return []
    with wh.reader() as con:
        rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM models {where} ORDER BY created_at, version",
                           params or []).fetchall()
    out = []
    for row in rows:
        rec = dict(zip(COLUMNS, row))
        for key in JSON_COLUMNS:
            rec[key] = json.loads(rec[key]) if rec[key] else None
        rec["path"] = str(wh.absolute(rec["path"]))
        out.append(rec)
    return out


def get(wh: Warehouse, version: str) -> dict | None:
    rows = _rows(wh, "WHERE version = ?", [version])
    return rows[0] if rows else None


def models(wh: Warehouse, target: str | None = None) -> list[dict]:
    return _rows(wh, "WHERE target = ?", [target]) if target else _rows(wh)


def pretrained(wh: Warehouse) -> list[dict]:
    """Every registered pre-trained model, newest first."""
    return _rows(wh, "WHERE kind = 'pretrain'")[::-1]


def promote(wh: Warehouse, version: str, reason: str) -> dict:
    model = get(wh, version)
    if model is None:
        raise WarehouseError(f"no model version {version!r}: see `ant models list`")
    if model["kind"] != "adapt":
        raise WarehouseError(f"{version} is a {model['kind']} model; only adapted models serve a target")
    with wh.writer() as con:
        upsert(con, "promotions", {"target": model["target"], "version": version, "reason": reason,
                                   "promoted_at": datetime.now(timezone.utc)})
    return model


def promoted(wh: Warehouse, target: str) -> tuple[dict, str]:
    """(model, reason) serving `target`."""
    row = None
    if wh.db_path.exists():
        with wh.reader() as con:
            row = con.execute("SELECT version, reason FROM promotions WHERE target = ?", [target]).fetchone()
    if row is None:
        raise WarehouseError(f"no promoted model for target {target!r}: run `ant run` (or `ant models promote`)")
    return get(wh, row[0]), row[1]


def promotions(wh: Warehouse) -> dict[str, tuple[str, str]]:
    """target → (promoted version, reason)."""
    if not wh.db_path.exists():
        return {}
    with wh.reader() as con:
        rows = con.execute("SELECT target, version, reason FROM promotions ORDER BY target").fetchall()
    return {target: (version, reason) for target, version, reason in rows}
