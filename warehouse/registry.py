"""The model registry: `models` (every trained version, with lineage and metrics) and
`promotions` (which version serves each target, and why)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from warehouse.store import Warehouse, WarehouseError, upsert

COLUMNS = ("version", "kind", "target", "method", "seed", "path", "parent", "lineage", "valid", "test",
           "flow_run_id", "created_at")


def register(wh: Warehouse, version: str, kind: str, path: str, lineage: dict, *, target: str | None = None,
             method: str | None = None, seed: int | None = None, parent: str | None = None,
             valid: dict | None = None, test: dict | None = None, flow_run_id: str | None = None) -> None:
    """Record a trained version once; registering it again changes nothing."""
    if get(wh, version) is not None:
        return
    with wh.writer() as con:
        upsert(con, "models", {
            "version": version, "kind": kind, "target": target, "method": method, "seed": seed,
            "path": path, "parent": parent, "lineage": json.dumps(lineage, sort_keys=True),
            "valid": json.dumps(valid) if valid else None, "test": json.dumps(test) if test else None,
            "flow_run_id": flow_run_id, "created_at": datetime.now(timezone.utc)})


def _rows(wh: Warehouse, where: str = "", params: list | None = None) -> list[dict]:
    if not wh.db_path.exists():
        return []
    with wh.reader() as con:
        rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM models {where} ORDER BY created_at, version",
                           params or []).fetchall()
    out = []
    for row in rows:
        rec = dict(zip(COLUMNS, row))
        for key in ("lineage", "valid", "test"):
            rec[key] = json.loads(rec[key]) if rec[key] else None
        out.append(rec)
    return out


def get(wh: Warehouse, version: str) -> dict | None:
    rows = _rows(wh, "WHERE version = ?", [version])
    return rows[0] if rows else None


def models(wh: Warehouse, target: str | None = None) -> list[dict]:
    return _rows(wh, "WHERE target = ?", [target]) if target else _rows(wh)


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


def choose_for_promotion(results: list[dict]) -> tuple[str, str]:
    """(version, reason): the best validation Recall@10 among methods whose mean validation
    score is not below scratch's, so a negatively transferring method is never promoted."""
    by_method: dict[str, list[dict]] = {}
    for r in results:
        by_method.setdefault(r["method"], []).append(r)

    def mean(method: str) -> float:
        return sum(r["valid"]["recall@10"] for r in by_method[method]) / len(by_method[method])

    floor = mean("scratch") if "scratch" in by_method else float("-inf")
    eligible = [m for m in by_method if mean(m) >= floor]
    method = max(eligible, key=mean)
    best = max(by_method[method], key=lambda r: r["valid"]["recall@10"])
    dropped = sorted(set(by_method) - set(eligible))
    reason = (f"{method}: best mean validation Recall@10 ({mean(method):.4f}) over {len(by_method[method])} "
              f"seed(s)" + (f"; below scratch on validation, not eligible: {', '.join(dropped)}" if dropped else ""))
    return best["version"], reason
