"""Transfer on the synthetic benchmark (ant_model/synthetic.py): re-learning the item adaptors
on a sparse target beats training the same model from scratch (the absence of negative
transfer that ANT is about), by a margin the paired bootstrap over users confirms.

Sized for CI (about a minute and a half on two cores): one pre-training, then both methods
for three training seeds, compared per user and seed. At this size, over data seeds 0, 3 and
4, the mean R@10 gain of re-learning over scratch was 0.19, 0.33 and 0.24 (MARGIN is 0.08);
`python bench/transfer.py` prints the full table at a larger size.
"""
from __future__ import annotations

import numpy as np
import torch

from ant_config import ModelConfig, TrainConfig
from ant_model.evaluate import paired_bootstrap, rank_targets
from ant_model.strategies import adapt, pretrain
from ant_model.synthetic import make_benchmark

MODEL = ModelConfig(width=64, ffn_width=64, n_experts=4, dropout=0.2, embedding_dropout=0.2)
PRETRAIN = TrainConfig(epochs=30, batch_size=64, lr_gamma=0.995, patience=30)
ADAPT = TrainConfig(epochs=100, batch_size=256, patience=25)
SEEDS = (0, 1, 2)
MARGIN = 0.08  # R@10, absolute


def test_relearning_beats_scratch_on_a_sparse_target(tmp_path):
    aux, target = make_benchmark(seed=0, aux_users=800, target_users=80)
    pretrain(aux, MODEL, PRETRAIN, tmp_path / "pre", progress=False)
    features = target.tensors(torch.device("cpu"))
    per_user = {}
    for method in ("relearn", "scratch"):
        runs = []
        for seed in SEEDS:
            model, _ = adapt(method, target, MODEL, ADAPT.model_copy(update={"seed": seed}),
                             tmp_path / "pre" / "best", progress=False)
            runs.append(rank_targets(model, features, target.test, 1024).per_user("recall@10"))
        per_user[method] = np.concatenate(runs)
    gain, low, _ = paired_bootstrap(per_user["relearn"], per_user["scratch"])
    assert gain > MARGIN and low > 0, (
        f"re-learning R@10 {per_user['relearn'].mean():.3f} vs scratch {per_user['scratch'].mean():.3f} "
        f"(gain {gain:.3f}, 95% CI low {low:.3f})")
