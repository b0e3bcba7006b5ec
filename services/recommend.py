"""Top-k next items from the model promoted for a target: for one history, or for every user
of the target at once into the `recommendations` table (so evaluation slices are SQL)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ant_model import checkpoint
from ant_model.data import history_batch
from ant_model.device import pick_device
from ant_model.evaluate import exclude_seen
from services.context import Context
from services.training import domain_data
from warehouse import recommendations, registry, training
from warehouse.store import WarehouseError


def _promoted_model(ctx: Context, target: str):
    """(model, record, its domain data) of the model serving `target`."""
    record, _ = registry.promoted(ctx.warehouse, target)
    model, meta = checkpoint.load(Path(record["path"]))
    data = domain_data(ctx, target, checkpoint.feature_dims(meta, Path(record["path"])))
    if model.n_items != data.n_items:
        raise checkpoint.CheckpointError(f"{record['path']}: the model was trained on {model.n_items} items, "
                                         f"{target} has {data.n_items}; retrain it on the current data")
    return model, record, data


@torch.inference_mode()
def _top_k(score, histories: list[np.ndarray], k: int, max_len: int, device) -> tuple[np.ndarray, np.ndarray]:
    """(items [B, k], scores [B, k]) best first; the history and padding are never recommended."""
    scores = score(history_batch(histories, max_len).to(device)).float()
    if not torch.isfinite(scores[:, 1:]).all():  # never served, never published
        raise WarehouseError("the promoted model gives non-finite scores (NaN or inf: damaged weights?); nothing "
                             "was recommended or published. Promote another version (`ant models list`)")
    top = torch.topk(exclude_seen(scores, histories), min(k, scores.shape[1] - 1), dim=1)
    return top.indices.cpu().numpy(), top.values.cpu().numpy()


def _check_k(k: int) -> None:
    if k < 1:  # --all -k 0 would replace the table with nothing
        raise WarehouseError(f"k = {k}: ask for at least one item")


def recommend(ctx: Context, target: str, history: list[str], k: int = 10) -> list[dict]:
    """[{item_id, title, score}] best first for one history of item ids, oldest first."""
    _check_k(k)
    if not history:
        raise WarehouseError("the history is empty: give at least one item id")
    catalogue = training.catalogue(ctx.warehouse, target)
    index = {item: i + 1 for i, (item, _) in enumerate(catalogue)}
    unknown = [item for item in history if item not in index]
    if unknown:
        raise WarehouseError(f"unknown item(s) {', '.join(unknown)} in target {target!r} "
                             f"(see the item_id column of the item_index table)")
    model, _, data = _promoted_model(ctx, target)
    items, scores = _top_k(model.scorer(data.tensors(torch.device("cpu"))),
                           [np.array([index[i] for i in history])], k, model.cfg.max_seq_len, "cpu")
    return [{"item_id": catalogue[i - 1][0], "title": catalogue[i - 1][1], "score": round(float(s), 4)}
            for i, s in zip(items[0], scores[0]) if np.isfinite(s)]


def recommend_all(ctx: Context, target: str, k: int, batch_size: int, before_test: bool = True) -> dict:
    """Top-k for every user of `target` into the `recommendations` table; a summary.

    `before_test`: from each user's history up to the test item (so the test split scores
    them, the evaluation view); else from the whole sequence (what to show next)."""
    _check_k(k)
    model, record, data = _promoted_model(ctx, target)
    device = pick_device(ctx.config.adapt.device)
    score = model.to(device).scorer(data.tensors(device))
    histories = [h if before_test else np.append(h, t) for h, t in data.test]
    items, scores = [], []
    for start in range(0, len(histories), batch_size):
        i, s = _top_k(score, histories[start:start + batch_size], k, model.cfg.max_seq_len, device)
        items.append(i)
        scores.append(s)
    users = recommendations.test_users(ctx.warehouse, target)
    path = recommendations.write(ctx.warehouse, target, record["version"], users, np.concatenate(items),
                                 np.concatenate(scores), before_test)
    ctx.warehouse.publish(target, {"recommendations": path})
    return {"target": target, "version": record["version"], "users": len(histories), "k": items[0].shape[1]}
