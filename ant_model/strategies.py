"""Pre-training and the adaptation strategies of ant-method.md, as one function each.

| method            | Transformer layers        | positions + norm | item adaptors |
|-------------------|---------------------------|------------------|---------------|
| relearn (ANT)     | pre-trained, frozen       | re-initialised   | re-initialised|
| finetune          | pre-trained, trained      | pre-trained      | pre-trained   |
| finetune-frozen   | pre-trained, frozen       | pre-trained      | pre-trained   |
| scratch           | random                    | random           | random        |
| sasrec            | random; items are IDs only (no features)                     |
| unisrec           | a text-only pre-trained model, fine-tuned                    |
| features-sasrec   | random; one linear layer per modality, no fusion product     |
"""
from __future__ import annotations

from pathlib import Path

from ant_config import ModelConfig, TrainConfig
from ant_model import checkpoint
from ant_model.data import DomainData, merge
from ant_model.model import ANT
from ant_model.train import FitResult, fit

METHODS = ("relearn", "finetune", "finetune-frozen", "scratch", "sasrec", "unisrec", "features-sasrec")
PRETRAINED_METHODS = ("relearn", "finetune", "finetune-frozen", "unisrec")


def method_config(method: str, base: ModelConfig) -> ModelConfig:
    """The architecture a method trains (the baselines change the item side only)."""
    if method == "sasrec":
        return base.model_copy(update={"modalities": [], "item_ids": True})
    if method == "unisrec":
        return base.model_copy(update={"modalities": ["text"]})
    if method == "features-sasrec":
        return base.model_copy(update={"moe": False, "fusion_product": False})
    return base


def pretrain(domains: list[DomainData], model_cfg: ModelConfig, train_cfg: TrainConfig,
             checkpoint_dir: Path | None = None, progress: bool = True) -> tuple[ANT, FitResult]:
    """Pre-train on several auxiliary domains at once (training splits, in-batch InfoNCE +
    alignment)."""
    data = merge(domains)
    model = ANT(_dims(data, model_cfg), model_cfg, data.n_items)
    return model, fit(model, data, train_cfg, "in_batch", checkpoint_dir, progress)


def _dims(data: DomainData, cfg: ModelConfig) -> dict[str, int]:
    return {m: d for m, d in data.feature_dims.items() if m in cfg.modalities}


def build(method: str, target: DomainData, model_cfg: ModelConfig,
          pretrained: Path | None = None) -> ANT:
    """The model `method` starts target training from (ready to train: frozen parts frozen)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    if method not in PRETRAINED_METHODS:
        cfg = method_config(method, model_cfg)
        return ANT(_dims(target, cfg), cfg, target.n_items)
    if pretrained is None:
        raise ValueError(f"method {method!r} needs a pre-trained model")
    meta = checkpoint.read_meta(pretrained)
    cfg = ModelConfig(**meta["model"])
    if method == "unisrec" and cfg.modalities != ["text"]:
        raise checkpoint.CheckpointError(f"{pretrained}: unisrec needs a text-only pre-trained model, "
                                         f"this one uses {cfg.modalities}")
    if {m: target.feature_dims.get(m) for m in cfg.modalities} != {m: meta["feature_dims"][m] for m in cfg.modalities}:
        raise checkpoint.CheckpointError(
            f"{pretrained}: pre-trained on features {meta['feature_dims']}, target {target.name} has "
            f"{target.feature_dims}; encode the target with the same encoders")
    model = ANT({m: meta["feature_dims"][m] for m in cfg.modalities}, cfg, target.n_items)
    checkpoint.load_weights(pretrained, model, strict=not cfg.item_ids)
    if method == "relearn":
        model.items.reset_parameters()
        model.sequence.reset_embedding()
    if method in ("relearn", "finetune-frozen"):
        for p in model.sequence.layers.parameters():
            p.requires_grad_(False)
    return model


def adapt(method: str, target: DomainData, model_cfg: ModelConfig, train_cfg: TrainConfig,
          pretrained: Path | None = None, checkpoint_dir: Path | None = None,
          progress: bool = True) -> tuple[ANT, FitResult]:
    """Train `method` on the target (full-catalogue softmax), keep the best validation epoch."""
    model = build(method, target, model_cfg, pretrained)
    return model, fit(model, target, train_cfg, "full", checkpoint_dir, progress)
