"""Full-ranking evaluation (ant-method.md, 'Evaluation protocol') and paired comparisons.

Every item of the target catalogue is ranked for every user; the items of the user's input
sequence are excluded; one relevant item per user. Per-user metrics are kept, so that "A beats
B" comes with a paired bootstrap confidence interval over users.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ant_model.data import history_batch, pad
from ant_model.model import ANT

CUTOFFS = (10, 50)


@dataclass
class Evaluation:
    ranks: np.ndarray  # 1-based rank of each user's target

    def per_user(self, metric: str) -> np.ndarray:
        name, k = metric.split("@")
        hit = self.ranks <= int(k)
        if name == "recall":
            return hit.astype(float)
        if name == "ndcg":
            return np.where(hit, 1.0 / np.log2(self.ranks + 1), 0.0)
        raise ValueError(f"unknown metric {metric!r}")

    def metrics(self) -> dict[str, float]:
        return {f"{m}@{k}": float(self.per_user(f"{m}@{k}").mean())
                for k in CUTOFFS for m in ("recall", "ndcg")}


@torch.inference_mode()
def rank_targets(model: ANT, features: dict[str, torch.Tensor], examples: list[tuple[np.ndarray, int]],
                 batch_size: int) -> Evaluation:
    """Ranks of each example's target among all items, history items excluded."""
    model.eval()
    device = next(model.parameters()).device
    n = len(next(iter(features.values())))
    items, _ = model.encode_items(features, torch.arange(n, device=device))
    ranks = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        histories = history_batch([h for h, _ in chunk], model.cfg.max_seq_len).to(device)
        targets = torch.tensor([t for _, t in chunk], device=device)
        scores = model.scores(model.user_vectors(items, histories), items)
        target_scores = scores.gather(1, targets[:, None])
        # Exclude the whole input sequence (not only its last L items); column 0 is padding.
        seen = pad([np.append(h, 0) for h, _ in chunk]).to(device)
        scores.scatter_(1, seen, float("-inf"))
        ranks.append(((scores > target_scores).sum(dim=1) + 1).cpu().numpy())
    return Evaluation(np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean of a - b, low, high): a confidence interval over users for a per-user metric."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
