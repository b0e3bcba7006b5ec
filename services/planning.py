"""What a training run will train, where, and under which version.

A `Plan` names everything that shapes a model: the resolved architecture (modalities
included), the training settings, the data fingerprints and feature encoders of its domains,
and its pre-trained parent. Its version is a hash of all of it but how the run executes
(threads, device, checkpoint interval), so the same inputs give the same version (nothing is
trained twice) and different inputs a new one (nothing is overwritten). Parents are found
through the registry, never by looking at folders.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ant_config import ModelConfig, Relearn, TrainConfig
from ant_config.protocol import method as method_spec
from services import modalities as modality_rules
from services.context import Context
from warehouse import registry, training
from ant_config.releases import check_name
from warehouse.store import WarehouseError, under

# Bump when a change to the code changes what a run produces: every version changes with it.
CODE_VERSION = 8  # 8: item vectors gathered with a deterministic backward (F.embedding); 7: the Transformer's dropout drawn as uniform >= p; 6: patience counts once validation beats most-popular; 5: adaptor dropout drawn as uniform >= p; 4: a repeated (seen) target is a miss, non-finite scores rank last, seeded initial weights
PRETRAIN_KINDS = ("ant", "text-only")
# Settings a pre-trained model does not fix: its modalities are resolved from the data, and
# item IDs (transductive) exist only on a target.
TARGET_SIDE = {"modalities", "item_ids"}


@dataclass(frozen=True)
class Plan:
    version: str
    folder: Path
    kind: str                   # "pretrain" | "adapt"
    method: str                 # the pre-training kind ("ant", "text-only") or the adaptation method
    domains: list[str]          # pre-training domains, or [target]
    model: ModelConfig | None   # the architecture with its modalities resolved; None: no parameters
    train: TrainConfig | None
    dims: dict[str, int]        # widths of the features the model reads
    lineage: dict
    parent: dict | None = None  # the registry record of the pre-trained parent

    @property
    def seed(self) -> int | None:
        return self.train.seed if self.train else self.lineage.get("seed")

    @property
    def parent_checkpoint(self) -> Path | None:
        return Path(self.parent["path"]) if self.parent else None


# How a run executes, not what it learns: the same run on one thread or two, on another device,
# or checkpointed more often is the same model (up to the order of float sums), so it keeps its
# version: a run resumes or is found done whatever these say. The lineage still records them.
EXECUTION_SETTINGS = ("cpu_threads", "device", "checkpoint_every_s", "eval_batch_size", "max_logits", "compile")


def version_of(lineage: dict) -> str:
    """A lineage's version: a hash of it with its training section's EXECUTION_SETTINGS at their
    defaults (so a version made before a setting was run differently stays the same)."""
    payload = lineage
    if lineage.get("train") is not None:
        defaults = {name: TrainConfig.model_fields[name].default for name in EXECUTION_SETTINGS}
        payload = {**lineage, "train": {**lineage["train"], **defaults}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_lineage(model: ModelConfig) -> dict:
    """The architecture as a lineage records it. A setting left at null (its behaviour before the
    setting existed, e.g. `ffn_dropout`) is left out, so adding an optional setting keeps the
    version of every model trained before it."""
    return model.model_dump(exclude_none=True)


def relearn_lineage(relearn: Relearn, item_ids: bool) -> dict:
    """What re-learning resets, as a lineage records it: the draw of the experts only when it is
    Xavier, and a setting left at null left out (both as before the settings existed), so runs
    trained before them keep their versions."""
    out = relearn.model_dump(exclude={"expert_init"}, exclude_none=True)
    return (out | {"expert_init": "xavier"}) if relearn.draw(item_ids) == "xavier" else out


def adapt_folder(ctx: Context, target: str, method: str, version: str) -> Path:
    return under(ctx.artifacts / "adapt", check_name(target, "target"), method, version)


def _data(ctx: Context, domains: list[str], modalities: list[str]) -> dict:
    wh = ctx.warehouse
    return {d: {"fingerprint": training.fingerprint(wh, d), "encoders": training.encoder_ids(wh, d, modalities)}
            for d in domains}


def pretrain_plan(ctx: Context, domains: list[str], kind: str = "ant") -> Plan:
    """Pre-training on `domains`: `kind` "text-only" is the UniSRec-style baseline's parent.
    Its modalities are `model.modalities`, else those every domain has."""
    if kind not in PRETRAIN_KINDS:
        raise ValueError(f"unknown pre-training kind {kind!r}; one of {', '.join(PRETRAIN_KINDS)}")
    if not domains:
        raise WarehouseError("no pre-training domains: name them in `auxiliary` (or with --domain)")
    requested = ["text"] if kind == "text-only" else ctx.config.model.modalities
    chosen, dims = modality_rules.resolve(ctx, domains, requested)
    model = ctx.config.model.model_copy(update={"modalities": chosen}).for_pretraining()
    lineage = {"kind": kind, "model": model_lineage(model), "train": ctx.config.pretrain.model_dump(),
               "dims": dims, "data": _data(ctx, domains, chosen), "code": CODE_VERSION}
    version = version_of(lineage)
    return Plan(version, ctx.artifacts / "pretrain" / kind / version, "pretrain", kind, list(domains),
                model, ctx.config.pretrain, dims, lineage)


def find_parent(ctx: Context, method: str, version: str | None = None) -> dict:
    """The registry record of the pre-trained model `method` starts from: `version`, else the
    newest finished one of the kind it needs (a text-only model for `unisrec`) built with this
    config's architecture (`model`: width, layers, ...), reading `model.modalities` when the
    config sets them. A model of another architecture is never picked silently: the error names
    the newest one and how it differs."""
    modalities = ctx.config.model.modalities
    wants_text_only = method_spec(method).parent == "text-only"
    if version:
        record = registry.get(ctx.warehouse, version)
        if record is None or record["kind"] != "pretrain":
            raise WarehouseError(f"no pre-trained model {version!r} in the registry: see `ant models list`")
        if "model" not in (record["lineage"] or {}):
            raise WarehouseError(f"pre-trained model {version} was registered by an older version of the "
                                 f"pipeline: run `ant pretrain` again")
        if wants_text_only and record["lineage"]["model"]["modalities"] != ["text"]:
            raise WarehouseError(f"{method} needs a text-only pre-trained model; {version} reads "
                                 f"{record['lineage']['model']['modalities']} (run `ant pretrain --text-only`)")
        return record
    architecture = ctx.config.model.model_dump(exclude=TARGET_SIDE)
    other = None  # the newest model of the right kind but another architecture
    for record in registry.pretrained(ctx.warehouse):
        lineage = record["lineage"] or {}
        if "model" not in lineage:
            continue
        reads = lineage["model"]["modalities"]
        if not (reads == ["text"] if wants_text_only else
                record["method"] == "ant" and (modalities is None or reads == list(modalities))):
            continue
        built = ModelConfig(**lineage["model"]).model_dump(exclude=TARGET_SIDE)
        if built == architecture:
            return record
        other = other or (record["version"], built)
    kind = "text-only " if wants_text_only else ""
    reading = f" reading {', '.join(modalities)}" if modalities and not wants_text_only else ""
    command = (f"`ant pretrain{' --text-only' if wants_text_only else ''}"
               f"{' --modalities ' + ','.join(modalities) if reading else ''}`")
    if other:
        newest, built = other
        differs = ", ".join(f"{k} {v} (config: {architecture[k]})" for k, v in built.items() if v != architecture[k])
        raise WarehouseError(f"no finished {kind}pre-trained model{reading} with this config's architecture in "
                             f"{ctx.warehouse.home}; the newest, {newest}, has {differs}: run {command} "
                             f"with this config, or name a model with --pretrained")
    raise WarehouseError(f"no finished {kind}pre-trained model{reading} in {ctx.warehouse.home}: "
                         f"run {command} first")


def adapt_plan(ctx: Context, target: str, method: str, seed: int | None = None,
               pretrained: str | None = None) -> Plan:
    """One method on one target for one seed (default: `adapt.seed`), from the pre-trained
    model `pretrained` (default: the newest one the method can start from, with the config's
    architecture)."""
    spec = method_spec(method)
    config = ctx.config
    seed = config.adapt.seed if seed is None else seed
    if not spec.trains:  # a sanity baseline: nothing but the data and the seed shape it
        lineage = {"method": method, "seed": seed, "data": _data(ctx, [target], []), "code": CODE_VERSION}
        version = version_of(lineage)
        return Plan(version, adapt_folder(ctx, target, method, version), "adapt", method, [target],
                    None, None, {}, lineage)
    train = config.training(method, seed)
    parent = None
    model = config.architecture(method)
    if spec.parent is not None:
        parent = find_parent(ctx, method, pretrained)
        model = config.model.on_target(ModelConfig(**parent["lineage"]["model"]))
        dims = parent["lineage"]["dims"]
        modality_rules.check_target(ctx, target, model.modalities)
    elif model.modalities == []:  # item IDs only (sasrec)
        dims = {}
    else:
        chosen, dims = modality_rules.resolve(ctx, [target], model.modalities)
        model = model.model_copy(update={"modalities": chosen})
    lineage = {"method": method, "model": model_lineage(model), "train": train.model_dump(), "dims": dims,
               "data": _data(ctx, [target], model.modalities),
               "relearn": relearn_lineage(config.relearn, model.item_ids) if method == "relearn" else None,
               "parent": parent["version"] if parent else None, "code": CODE_VERSION}
    version = version_of(lineage)
    return Plan(version, adapt_folder(ctx, target, method, version), "adapt", method, [target],
                model, train, dims, lineage, parent)
