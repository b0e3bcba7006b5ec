"""Top-k next items for a history, from the model promoted for a target."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ant_config import AntConfig
from ant_model import checkpoint
from tasks.model import domain_data
from warehouse import registry, training
from warehouse.store import Warehouse, WarehouseError


def recommend(config: AntConfig, target: str, history: list[str], k: int = 10) -> list[dict]:
    """[{item_id, title, score}] best first; history items are never recommended."""
    wh = Warehouse(config.home)
    record, _ = registry.promoted(wh, target)
    model, _ = checkpoint.load(Path(record["path"]))
    catalogue = training.catalogue(wh, target)
    index = {item: i + 1 for i, (item, _) in enumerate(catalogue)}
    unknown = [item for item in history if item not in index]
    if unknown:
        raise WarehouseError(f"unknown item(s) {', '.join(unknown)} in target {target!r} "
                             f"(see the item_id column of the item_index table)")
    if not history:
        raise WarehouseError("the history is empty: give at least one item id")
    data = domain_data(config, target, model.cfg.modalities)
    features = data.tensors(torch.device("cpu"))
    model.eval()
    with torch.inference_mode():
        items, _ = model.encode_items(features, torch.arange(data.n_items + 1))
        seq = torch.tensor([[index[i] for i in history][-model.cfg.max_seq_len:]])
        scores = model.scores(model.user_vectors(items, seq), items)[0]
        scores[0] = float("-inf")
        scores[[index[i] for i in history]] = float("-inf")
        top = torch.topk(scores, min(k, int(np.isfinite(scores.numpy()).sum())))
    return [{"item_id": catalogue[i - 1][0], "title": catalogue[i - 1][1], "score": round(float(s), 4)}
            for s, i in zip(top.values.tolist(), top.indices.tolist())]
