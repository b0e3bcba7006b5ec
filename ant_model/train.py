"""The training loop shared by pre-training and every adaptation strategy.

Each user's sequence is trained once per epoch with the loss at every position (the causal
mask makes this the objective of training on every prefix), batches are padded to their own
longest sequence, and item vectors are computed once per step. Model selection keeps the
epoch with the best validation Recall@10 (with patience); training resumes from the last
checkpoint after a crash. Runs under `torchrun` with DistributedDataParallel unchanged.
"""
from __future__ import annotations

import copy
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ant_config import TrainConfig
from ant_model import checkpoint
from ant_model.data import DomainData, training_batches
from ant_model.evaluate import rank_targets
from ant_model.model import ANT

log = logging.getLogger(__name__)
SELECT_ON = "recall@10"


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    seconds: float
    sequences_per_s: float
    history: list[dict] = field(default_factory=list)


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def seed_everything(cfg: TrainConfig) -> None:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fit(model: ANT, data: DomainData, cfg: TrainConfig, objective: str,
        checkpoint_dir: Path | None = None, progress: bool = True) -> FitResult:
    """Train `model` on `data.train`, select on `data.valid`; returns with the best weights."""
    seed_everything(cfg)
    device = pick_device(cfg.device)
    model.to(device)
    features = data.tensors(device)
    has_image = torch.from_numpy(data.has["image"]).to(device) if "image" in data.has else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_class(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=cfg.lr_gamma)
    rank, world = _distributed()
    amp = cfg.amp != "off" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp and cfg.amp == "fp16")

    start, best_epoch, best_valid, history = 0, -1, {SELECT_ON: -1.0}, []
    best_state = copy.deepcopy(model.state_dict())
    last_dir = checkpoint_dir / "last" if checkpoint_dir else None
    if last_dir is not None and (last_dir / checkpoint.META_FILE).exists():
        meta = checkpoint.read_meta(last_dir)
        checkpoint.load_weights(last_dir, model)
        checkpoint.load_optimizer(last_dir, optimizer)
        start, best_epoch, best_valid, history = (meta["epoch"] + 1, meta["best_epoch"],
                                                  meta["best_valid"], meta["history"])
        for _ in range(start):
            scheduler.step()
        if (checkpoint_dir / "best" / checkpoint.MODEL_FILE).exists():
            best_model = copy.deepcopy(model)
            checkpoint.load_weights(checkpoint_dir / "best", best_model)
            best_state = best_model.state_dict()
        log.info("resuming from epoch %d (best so far: epoch %d, %s %.4f)", start, best_epoch,
                 SELECT_ON, best_valid[SELECT_ON])
    trained = DistributedDataParallel(model) if world > 1 else model
    if cfg.compile and device.type == "cuda":
        trained = torch.compile(trained)

    started, sequences = time.monotonic(), 0
    for epoch in range(start, cfg.epochs):
        model.train()
        rng = np.random.default_rng(cfg.seed * 100_003 + epoch)
        batches = training_batches(data.train, cfg.batch_size, model.cfg.max_seq_len, rng, (rank, world))
        bar = tqdm(batches, desc=f"{data.name} epoch {epoch}", disable=not progress or rank != 0,
                   leave=False, unit="batch")
        total, steps = 0.0, 0
        for inputs, targets in bar:
            inputs, targets = inputs.to(device), targets.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16,
                                enabled=amp):
                loss = trained(features, has_image, inputs, targets, objective, cfg.align_weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            total, steps, sequences = total + loss.item(), steps + 1, sequences + len(inputs)
            bar.set_postfix(loss=f"{loss.item():.3f}",
                            seq_per_s=f"{sequences / max(time.monotonic() - started, 1e-9):.0f}")
        scheduler.step()
        valid = rank_targets(model, features, data.valid, cfg.eval_batch_size).metrics()
        history.append({"epoch": epoch, "loss": total / max(steps, 1), **valid})
        improved = valid[SELECT_ON] > best_valid[SELECT_ON]
        if improved:
            best_epoch, best_valid = epoch, valid
            best_state = copy.deepcopy(model.state_dict())
        if rank == 0:
            log.info("%s epoch %d: loss %.4f, valid %s %.4f%s", data.name, epoch, total / max(steps, 1),
                     SELECT_ON, valid[SELECT_ON], " (best)" if improved else "")
            if checkpoint_dir is not None:
                meta = {"feature_dims": data.feature_dims, "n_items": data.n_items, "epoch": epoch,
                        "best_epoch": best_epoch, "best_valid": best_valid, "history": history}
                if improved:
                    checkpoint.save(checkpoint_dir / "best", model, meta)
                checkpoint.save(last_dir, model, meta, optimizer)
        if epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    seconds = time.monotonic() - started
    return FitResult(best_epoch, best_valid, len(history), seconds, sequences / max(seconds, 1e-9), history)
