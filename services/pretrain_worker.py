"""One rank of distributed pre-training, as `torchrun` starts it (see services/training.py).

    torchrun --standalone --nproc_per_node N -m services.pretrain_worker REQUEST.json

Every rank loads the data and trains its share of each epoch under DDP (NCCL on GPUs, one
per rank; gloo on CPU); global rank 0 writes the checkpoints and `fit.json`, which the
launching process reads and registers. With several nodes, torchrun's rendezvous gives each
process its global rank.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ant_config import AntConfig
from services.context import Context
from services.planning import pretrain_plan
from services.training import train_pretrain


def main(request_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    ctx = Context.of(AntConfig.model_validate(request["config"]))
    cuda = torch.cuda.is_available() and ctx.config.pretrain.device in ("auto", "cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        plan = pretrain_plan(ctx, request["domains"], request["kind"])
        fit = train_pretrain(ctx, plan)
        if dist.get_rank() == 0:
            (plan.folder / "fit.json").write_text(json.dumps(fit))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
