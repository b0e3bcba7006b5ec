"""Prefect tasks of training: pre-train on auxiliary domains, adapt to a target.

Artifacts go to `ANT_HOME/artifacts/<kind>/<name>/<version>/` (safetensors + JSON), where the
version is a hash of everything that shapes the model: config, data fingerprints, feature
encoder ids and the parent model. The same inputs give the same version, and a finished
version is not trained again; a crashed one resumes from its last epoch.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from prefect import task

from ant_config import AntConfig
from ant_model import checkpoint
from ant_model.data import DomainData
from ant_model.evaluate import rank_targets
from ant_model.strategies import METHODS, adapt, method_config, pretrain
from ant_model.train import pick_device
from warehouse import registry, training
from warehouse.store import Warehouse, WarehouseError

log = logging.getLogger(__name__)
CODE_VERSION = 1  # bump when training code changes what a version trains


def domain_data(config: AntConfig, domain: str, modalities: list[str]) -> DomainData:
    arrays = training.load_domain(Warehouse(config.home), domain, modalities)
    if not modalities:  # an ID-only model still needs the catalogue size
        arrays["features"] = {"none": np.zeros((arrays["n_items"] + 1, 1), dtype=np.float32)}
        arrays["has"] = {"none": np.zeros(arrays["n_items"] + 1, dtype=bool)}
    return DomainData(domain, arrays["features"], arrays["has"], arrays["train"], arrays["valid"], arrays["test"])


def version_of(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def artifacts(config: AntConfig) -> Path:
    return Path(config.home).resolve() / "artifacts"


def _lineage(config: AntConfig, domains: list[str], modalities: list[str]) -> dict:
    wh = Warehouse(config.home)
    return {d: {"fingerprint": training.fingerprint(wh, d),
                "encoders": training.encoder_ids(wh, d, modalities)} for d in domains}


def pretrained_dir(config: AntConfig, version: str | None, text_only: bool = False) -> Path:
    """The best checkpoint of a pre-trained version (default: the newest finished one)."""
    root = artifacts(config) / "pretrain"
    candidates = sorted((p for p in root.glob("*/*") if (p / "best" / checkpoint.META_FILE).exists()),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    if version:
        candidates = [p for p in candidates if p.name == version]
    candidates = [p for p in candidates
                  if (checkpoint.read_meta(p / "best")["model"]["modalities"] == ["text"]) == text_only]
    if not candidates:
        raise WarehouseError(f"no finished pre-trained model{' ' + version if version else ''} under {root}: "
                             f"run `ant pretrain`{' with model.modalities [text]' if text_only else ''} first")
    return candidates[0] / "best"


def run_pretrain(config: AntConfig, domains: list[str], text_only: bool = False) -> dict:
    model_cfg = config.model.model_copy(update={"modalities": ["text"]}) if text_only else config.model
    lineage = _lineage(config, domains, model_cfg.modalities)
    version = version_of({"model": model_cfg.model_dump(), "train": config.pretrain.model_dump(),
                          "data": lineage, "code": CODE_VERSION})
    folder = artifacts(config) / "pretrain" / ("text-only" if text_only else "ant") / version
    if (folder / "result.json").exists():
        log.info("pre-trained model %s exists: nothing to train", version)
        return json.loads((folder / "result.json").read_text())
    data = [domain_data(config, d, model_cfg.modalities) for d in domains]
    _, fit = pretrain(data, model_cfg, config.pretrain, checkpoint_dir=folder)
    result = {"version": version, "path": str(folder / "best"), "domains": domains, "lineage": lineage,
              "best_epoch": fit.best_epoch, "valid": fit.best_valid, "seconds": round(fit.seconds, 1)}
    registry.register(Warehouse(config.home), version, "pretrain", result["path"],
                      {"data": lineage, "config": {"model": model_cfg.model_dump(), "train": config.pretrain.model_dump()},
                       "code_version": CODE_VERSION}, method="text-only" if text_only else "ant",
                      valid=fit.best_valid, flow_run_id=_flow_run_id())
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run
    return str(flow_run.id) if flow_run.id else None


def run_adapt(config: AntConfig, target: str, method: str, pretrained: str | None = None,
              seed: int | None = None) -> dict:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    train_cfg = config.adapt if seed is None else config.adapt.model_copy(update={"seed": seed})
    parent = None
    if method in ("relearn", "finetune", "finetune-frozen", "unisrec"):
        parent = pretrained_dir(config, pretrained, text_only=method == "unisrec")
    model_cfg = method_config(method, config.model)
    modalities = model_cfg.modalities if parent is None else checkpoint.read_meta(parent)["model"]["modalities"]
    lineage = {"method": method, "model": model_cfg.model_dump(), "train": train_cfg.model_dump(),
               "data": _lineage(config, [target], modalities),
               "parent": parent.parent.name if parent else None, "code": CODE_VERSION}
    version = version_of(lineage)
    folder = artifacts(config) / "adapt" / target / method / version
    if (folder / "result.json").exists():
        return json.loads((folder / "result.json").read_text())
    data = domain_data(config, target, modalities)
    model, fit = adapt(method, data, config.model, train_cfg, parent, checkpoint_dir=folder)
    test = rank_targets(model, data.tensors(pick_device(train_cfg.device)), data.test,
                        train_cfg.eval_batch_size)
    np.save(folder / "test_ranks.npy", test.ranks)
    result = {"method": method, "target": target, "version": version, "seed": train_cfg.seed,
              **test.metrics(), "valid": fit.best_valid, "best_epoch": fit.best_epoch,
              "pretrained": parent.parent.name if parent else None, "path": str(folder / "best")}
    registry.register(Warehouse(config.home), version, "adapt", result["path"], lineage, target=target,
                      method=method, seed=train_cfg.seed, parent=result["pretrained"], valid=fit.best_valid,
                      test=test.metrics(), flow_run_id=_flow_run_id())
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


pretrain_task = task(name="pretrain")(run_pretrain)
adapt_task = task(name="adapt", task_run_name="adapt {target} {method}")(run_adapt)
