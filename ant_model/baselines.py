"""Sanity baselines without parameters: a model that does not beat them has learned nothing.

- `popularity_scorer`: every item scored by how often it is a training item of the domain
  (the user's own history is excluded by the ranking, as for every model);
- `random_scorer`: independent uniform scores per user, seeded: the floor of the metrics.
"""
from __future__ import annotations

import numpy as np
import torch


def popularity_scorer(train: list[np.ndarray], n_items: int):
    counts = np.bincount(np.concatenate(train) if train else np.zeros(0, dtype=np.int64),
                         minlength=n_items + 1).astype(np.float32)
    counts[0] = 0
    table = torch.from_numpy(counts)
    return lambda histories: table.to(histories.device).expand(len(histories), -1).clone()


def random_scorer(n_items: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return lambda histories: torch.rand(len(histories), n_items + 1, generator=generator).to(histories.device)
