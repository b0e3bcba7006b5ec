"""Pre-training and the adaptation strategies of ant-method.md, as one function each.

| method            | Transformer layers        | positions        | input norm  | item adaptors  |
|-------------------|---------------------------|------------------|-------------|----------------|
| relearn (ANT)     | pre-trained, 0.1 × lr (*) | re-initialised   | pre-trained | re-initialised |
| finetune          | pre-trained, trained      | pre-trained      | pre-trained | pre-trained    |
| finetune-frozen   | pre-trained, frozen       | pre-trained      | pre-trained | pre-trained    |
| scratch           | random                    | random           | random      | random         |
| sasrec            | random; items are IDs only, dot-product scores (RecBole's SASRec)    |
| unisrec           | a text-only pre-trained model, fine-tuned                            |
| features-sasrec   | random; one linear layer per modality, no fusion product             |
| pop, random       | no parameters: sanity baselines (ant_model.baselines)                |

(*) `Relearn.transformer_lr_scale`; 0 freezes it, as the paper does. `Relearn.reset_norm`
re-initialises the input norm too; `Relearn.reset_positions: false` keeps the pre-trained
positions; `Relearn.draw` says whether the experts are re-drawn as the authors do. With
`model.item_ids` (transductive) every method but the sanity baselines adds a fresh item-ID
table for the target.
"""
from __future__ import annotations

from pathlib import Path

from ant_config import ModelConfig, Relearn, TrainConfig
from ant_config.protocol import method as method_spec
from ant_model import checkpoint
from ant_model.adaptors import redraw_experts_xavier
from ant_model.baselines import popularity_scorer, random_scorer
from ant_model.data import DomainData, merge
from ant_model.model import ANT
from ant_model.train import FitResult, fit, seed_everything

TRANSFORMER = "sequence.layers."  # parameter-name prefix of the Transformer layers


def pretrain(domains: list[DomainData], model_cfg: ModelConfig, train_cfg: TrainConfig,
             checkpoint_dir: Path | None = None, progress: bool = True) -> tuple[ANT, FitResult]:
    """Pre-train on several auxiliary domains at once (training splits, in-batch InfoNCE +
    alignment). Never with item IDs (`model_cfg.item_ids` is for target models): the auxiliary
    catalogues' IDs cannot transfer."""
    data = merge(domains)
    seed_everything(train_cfg)  # the initial weights are the seed's, whatever ran before in this process
    model = ANT(data.feature_dims, model_cfg.for_pretraining(), data.n_items)
    return model, fit(model, data, train_cfg, "in_batch", checkpoint_dir, progress)


def build(method: str, target: DomainData, model_cfg: ModelConfig, pretrained: Path | None = None,
          relearn: Relearn = Relearn()) -> ANT:
    """The model `method` starts target training from (ready to train: frozen parts frozen).

    `model_cfg` is the architecture of a method without a parent (`AntConfig.architecture`,
    modalities resolved); the others take their parent's, read from its checkpoint, with
    `model_cfg.item_ids`: a transductive model adds a fresh item-ID table for the target."""
    spec = method_spec(method)
    if spec.parent is None:
        return ANT(target.feature_dims, model_cfg, target.n_items)
    if pretrained is None:
        raise ValueError(f"method {method!r} needs a pre-trained model")
    meta = checkpoint.read_meta(pretrained)
    cfg = model_cfg.on_target(checkpoint.model_config(meta, pretrained))
    theirs = checkpoint.feature_dims(meta, pretrained)
    ours = {m: target.feature_dims.get(m) for m in cfg.modalities}
    if ours != {m: theirs[m] for m in cfg.modalities}:
        raise checkpoint.CheckpointError(
            f"{pretrained}: pre-trained on features {theirs}, target {target.name} has "
            f"{target.feature_dims}; encode the target with the same encoders")
    model = ANT({m: theirs[m] for m in cfg.modalities}, cfg, target.n_items)
    checkpoint.load_weights(pretrained, model, strict=not cfg.item_ids)
    if method == "relearn":
        model.items.reset_parameters()
        if relearn.draw(cfg.item_ids) == "xavier":
            redraw_experts_xavier(model.items)
        model.sequence.reset_embedding(positions=relearn.reset_positions is not False, norm=relearn.reset_norm)
    if method == "finetune-frozen" or (method == "relearn" and relearn.transformer_lr_scale == 0):
        for p in model.sequence.layers.parameters():
            p.requires_grad_(False)
    return model


def adapt(method: str, target: DomainData, model_cfg: ModelConfig, train_cfg: TrainConfig,
          pretrained: Path | None = None, checkpoint_dir: Path | None = None,
          progress: bool = True, relearn: Relearn = Relearn()) -> tuple[ANT, FitResult]:
    """Train `method` on the target (full-catalogue softmax), keep the best validation epoch."""
    seed_everything(train_cfg)  # the initial (and re-learned) weights are the seed's
    model = build(method, target, model_cfg, pretrained, relearn)
    scales = learning_rate_scales(method, relearn)
    return model, fit(model, target, train_cfg, "full", checkpoint_dir, progress, scales)


def learning_rate_scales(method: str, relearn: Relearn) -> dict[str, float] | None:
    """Parameter-name prefix → factor on the learning rate while `method` trains: re-learning's
    Transformer at `relearn.transformer_lr_scale`; None: every parameter at the configured rate."""
    return {TRANSFORMER: relearn.transformer_lr_scale} if method == "relearn" else None


def sanity_scorer(method: str, target: DomainData, seed: int):
    """The scorer of a baseline without parameters (`pop`, `random`)."""
    if method == "pop":
        return popularity_scorer(target.train, target.n_items)
    if method == "random":
        return random_scorer(target.n_items, seed)
    raise ValueError(f"{method!r} is not a sanity baseline")
