"""The training loop shared by pre-training and every adaptation strategy.

Each user's sequence is trained once per epoch with the loss at every position (the causal
mask makes this the objective of training on every prefix); a batch holds about `batch_size`
target positions, padded to its own longest sequence, and item vectors are computed once per
step. Model selection keeps the last epoch with the best validation Recall@10 (with patience,
counted once validation beats most-popular's, since a run on its initial plateau has not
converged); a run that ends at its epoch cap instead says so, since it has not converged. Training resumes
from the last checkpoint after a crash. Runs under `torchrun` with DistributedDataParallel
unchanged.
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
from safetensors import SafetensorError
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ant_config import TrainConfig
from ant_config.errors import UserError
from ant_config.protocol import SELECT_ON
from ant_model import checkpoint
from ant_model.baselines import popularity_scorer
from ant_model.data import DomainData, training_batches
from ant_model.device import autocast, pick_device
from ant_model.evaluate import rank_targets
from ant_model.model import ANT

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    stopped_by: str  # "patience": converged; "cap": still improving (or never above the floor) when the epochs ran out
    seconds: float  # training wall time, summed over every resume (as in `history`)
    targets_per_s: float  # this process's throughput
    history: list[dict] = field(default_factory=list)  # per epoch: loss, validation metrics, seconds so far
    # True on the CPU (same seed, same weights, same metrics) and on CUDA with
    # `deterministic: true`; CUDA kernels are otherwise free to reorder their sums
    deterministic: bool = True
    pop_valid: float | None = None  # most-popular's validation R@10, the patience floor; None: no floor

    def summary(self) -> dict:
        """What every training result reports (JSON line, registry, report)."""
        to_best = next((h["seconds"] for h in self.history if h["epoch"] == self.best_epoch), None)
        return {"best_epoch": self.best_epoch, "epochs_run": self.epochs_run, "stopped_by": self.stopped_by,
                "seconds": round(self.seconds, 1), "seconds_to_best": to_best and round(to_best, 1),
                "deterministic": self.deterministic, "pop_valid": self.pop_valid}


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


class TrainingDiverged(UserError, FloatingPointError):
    """The loss stopped being a finite number: nothing more can be learned from this run."""


NEGATIVE_POWER = 0.75  # popularity^0.75: frequent items sampled more, rare ones still seen (word2vec's)


def negative_distribution(data: DomainData) -> torch.Tensor:
    """Sampling probabilities of the items as negatives (padding never drawn)."""
    counts = np.bincount(np.concatenate(data.train), minlength=data.n_items + 1).astype(np.float64) + 1.0
    counts[0] = 0.0
    weights = counts ** NEGATIVE_POWER
    return torch.from_numpy(weights / weights.sum()).float()


def _param_groups(model: ANT, lr: float, lr_scale: dict[str, float]) -> list[dict]:
    """Trainable parameters, those under a `lr_scale` prefix at `lr` × its factor."""
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = next((f for prefix, f in lr_scale.items() if name.startswith(prefix)), 1.0)
            groups.setdefault(scale, []).append(p)
    return [{"params": ps, "lr": lr * scale} for scale, ps in groups.items()]


def _resume(last_dir: Path, model: ANT, optimizer: torch.optim.Optimizer) -> dict | None:
    """The progress of the last checkpoint, loaded into `model` and `optimizer`, or None (with
    a warning) when it cannot be read whole: the run then starts over."""
    try:
        meta = checkpoint.read_meta(last_dir)
        progress = {k: meta[k] for k in ("epoch", "best_epoch", "best_valid", "history")}
        checkpoint.load_weights(last_dir, model)
        checkpoint.load_optimizer(last_dir, optimizer)
        return progress
    except (checkpoint.CheckpointError, SafetensorError, KeyError, ValueError, OSError) as exc:
        log.warning("cannot resume from %s (%s): training starts over", last_dir, exc)
        return None


def fit(model: ANT, data: DomainData, cfg: TrainConfig, objective: str,
        checkpoint_dir: Path | None = None, progress: bool = True,
        lr_scale: dict[str, float] | None = None) -> FitResult:
    """Train `model` on `data.train`, select on `data.valid`; returns with the best weights.
    `lr_scale` maps parameter-name prefixes to learning-rate factors."""
    seed_everything(cfg)
    device = pick_device(cfg.device)
    model.to(device)
    features = data.tensors(device)
    has_image = torch.from_numpy(data.has["image"]).to(device) if "image" in data.has else None
    q = log_q = None
    if objective == "full" and data.n_items > cfg.sampled_softmax_above:  # too large to score whole
        objective, q = "sampled", negative_distribution(data).to(device)
        log_q = q.clamp(min=1e-30).log()
    params = [p for p in model.parameters() if p.requires_grad]
    opt_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_class(_param_groups(model, cfg.lr, lr_scale or {}), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=cfg.lr_gamma)
    rank, world = _distributed()
    amp = cfg.amp != "off" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp and cfg.amp == "fp16")

    valid = data.valid
    if cfg.valid_users and len(valid) > cfg.valid_users:  # a fixed sample: every epoch sees the same users
        chosen = np.random.default_rng(cfg.seed).choice(len(valid), cfg.valid_users, replace=False)
        valid = [valid[i] for i in np.sort(chosen)]
    eval_batch = min(cfg.eval_batch_size, max(1, cfg.max_logits // (data.n_items + 1)))
    floor = None
    if cfg.patience_floor == "popularity":
        floor = rank_targets(popularity_scorer(data.train, data.n_items), valid, eval_batch, model.cfg.max_seq_len,
                             device).metrics()[SELECT_ON]
        log.info("%s: most-popular's validation %s is %.4f; patience counts once validation beats it",
                 data.name, SELECT_ON, floor)

    start, best_epoch, best_valid, history = 0, -1, {SELECT_ON: -1.0}, []
    initial = copy.deepcopy(model.state_dict())
    best_state = initial
    last_dir = checkpoint_dir / "last" if checkpoint_dir else None
    resumed = _resume(last_dir, model, optimizer) if last_dir and (last_dir / checkpoint.META_FILE).exists() else None
    if resumed is not None:
        start, best_epoch, best_valid, history = (resumed["epoch"] + 1, resumed["best_epoch"],
                                                  resumed["best_valid"], resumed["history"])
        scheduler.last_epoch = start  # the schedule where the run left it
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * cfg.lr_gamma ** start
        best_dir = checkpoint_dir / "best"
        if (best_dir / checkpoint.MODEL_FILE).exists():
            best_model = copy.deepcopy(model)
            checkpoint.load_weights(best_dir, best_model)
            best_state = best_model.state_dict()
        log.info("resuming from epoch %d (best so far: epoch %d, %s %.4f)", start, best_epoch,
                 SELECT_ON, best_valid[SELECT_ON])
    elif last_dir is not None and (last_dir / checkpoint.META_FILE).exists():
        model.load_state_dict(initial)  # a partly loaded checkpoint must not leak into the fresh run
        optimizer.state.clear()
    trained = DistributedDataParallel(model) if world > 1 else model
    if cfg.compile and device.type == "cuda":
        trained = torch.compile(trained, dynamic=True)  # batch shapes vary with the packing

    started, examples, stopped_by = time.monotonic(), 0, "cap"
    saved, saved_best = started, best_epoch  # the last checkpoint's time, and the best epoch it wrote
    before = history[-1].get("seconds") or 0.0 if history else 0.0  # training time before a resume
    for epoch in range(start, cfg.epochs):
        model.train()
        rng = np.random.default_rng(cfg.seed * 100_003 + epoch)
        batches = training_batches(data.train, cfg.batch_size, model.cfg.max_seq_len, rng, (rank, world))
        bar = tqdm(batches, desc=f"{data.name} epoch {epoch}", leave=False, unit="batch",
                   disable=None if progress and rank == 0 else True)  # None: only on a terminal
        total, steps = 0.0, 0
        for inputs, targets in bar:
            inputs, targets = inputs.to(device), targets.to(device)
            negatives = torch.multinomial(q, cfg.negatives, replacement=True) if objective == "sampled" else None
            with autocast(device, cfg.amp, enabled=amp):
                loss = trained(features, has_image, inputs, targets, objective, cfg.align_weight, cfg.max_logits,
                               negatives, log_q)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"{data.name}: the training loss became {loss.item()} at epoch {epoch}, step {steps}; "
                    f"the run stopped and its last checkpoint is kept. Check the "
                    f"features (and a pre-trained parent's weights), or lower the learning rate")
            total, steps, examples = total + loss.item(), steps + 1, examples + int((targets != 0).sum())
            bar.set_postfix(loss=f"{loss.item():.3f}",
                            targets_per_s=f"{examples / max(time.monotonic() - started, 1e-9):.0f}")
        scheduler.step()
        metrics = rank_targets(model.scorer(features), valid, eval_batch, model.cfg.max_seq_len, device).metrics()
        history.append({"epoch": epoch, "loss": total / max(steps, 1), **metrics,
                        "seconds": before + time.monotonic() - started})
        # Only a strict gain is progress. RecBole counts a tie too, but once the learning rate has
        # decayed the ranking freezes and every epoch ties: re-learning on Gift_Cards then ran to
        # its cap, "improving" at each tie. min_patience_steps keeps patience from being noisy.
        improved = metrics[SELECT_ON] > best_valid[SELECT_ON]
        if improved:
            best_epoch, best_valid = epoch, metrics
            best_state = copy.deepcopy(model.state_dict())
        patience = max(cfg.patience, -(-cfg.min_patience_steps // max(steps, 1)))  # epochs, at least that many steps
        learning = floor is None or best_valid[SELECT_ON] > floor  # off the initial plateau
        converged = learning and epoch - best_epoch >= patience
        ending = converged or epoch == cfg.epochs - 1
        if rank == 0:
            log.info("%s epoch %d: loss %.4f, valid %s %.4f%s; %d steps, %.0f s so far", data.name, epoch,
                     total / max(steps, 1), SELECT_ON, metrics[SELECT_ON], " (best)" if improved else "", steps,
                     history[-1]["seconds"])
            if checkpoint_dir is not None and (ending or time.monotonic() - saved >= cfg.checkpoint_every_s):
                meta = {"feature_dims": data.feature_dims, "n_items": data.n_items, "epoch": epoch,
                        "best_epoch": best_epoch, "best_valid": best_valid, "history": history}
                if best_epoch > saved_best:  # "best" always holds the epoch "last" names as best
                    checkpoint.save(checkpoint_dir / "best", model, meta, state=best_state)
                    saved_best = best_epoch
                checkpoint.save(last_dir, model, meta, optimizer)
                saved = time.monotonic()
        if converged:
            stopped_by = "patience"
            break
    if floor is not None and best_valid[SELECT_ON] <= floor:
        log.warning("%s: validation %s never beat most-popular's (%.4f <= %.4f) in %d epochs: the model learned "
                    "nothing usable. Check the features, or raise the learning rate or the epochs.",
                    data.name, SELECT_ON, best_valid[SELECT_ON], floor, len(history))
    elif stopped_by == "cap":
        log.warning("%s: stopped at the cap of %d epochs before patience ended it (best epoch %d by validation "
                    "%s): not converged. Raise the epochs (pretrain.epochs / adapt.epochs, or --epochs), or the "
                    "learning rate.", data.name, cfg.epochs, best_epoch, SELECT_ON)
    model.load_state_dict(best_state)
    elapsed = time.monotonic() - started
    return FitResult(best_epoch, best_valid, len(history), stopped_by, before + elapsed,
                     examples / max(elapsed, 1e-9), history, device.type == "cpu" or cfg.deterministic, floor)
