"""Run by test_ddp under `torchrun --nproc_per_node 2`: a few training steps with gloo, then
each rank writes a hash of its weights."""
from __future__ import annotations

import hashlib
import sys

import torch
import torch.distributed as dist

from ant_config import ModelConfig, TrainConfig
from ant_model.model import ANT
from ant_model.train import fit
from ant_model.synthetic import make_benchmark

if __name__ == "__main__":
    dist.init_process_group("gloo")
    _, target = make_benchmark(seed=3, aux_domains=1, aux_users=10, target_users=64, n_types=6, items_per_type=3)
    cfg = ModelConfig(width=16, ffn_width=16, n_experts=2, max_seq_len=8, modalities=["text", "image", "price"])
    torch.manual_seed(dist.get_rank())  # different starting weights: DDP must broadcast rank 0's
    model = ANT(target.feature_dims, cfg, target.n_items)
    fit(model, target, TrainConfig(epochs=2, batch_size=16, patience=5, seed=0), "full", progress=False)
    digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values()))
    with open(f"{sys.argv[1]}.{dist.get_rank()}", "w") as f:
        f.write(digest.hexdigest())
    dist.destroy_process_group()
