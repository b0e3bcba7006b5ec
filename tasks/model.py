"""Prefect tasks of training: pre-train on auxiliary domains, adapt to a target.

Artifacts go to `ANT_HOME/artifacts/<kind>/<name>/<version>/` (safetensors + JSON), where the
version is a hash of everything that shapes the model: config, data fingerprints, feature
encoder ids and the parent model (a `Plan`). The same inputs give the same version, which is
also the task's cache key; a finished version is not trained again, a crashed one resumes
from its last epoch. With `orchestration.pretrain_processes` > 1, pre-training runs under
`torchrun` (tasks/pretrain_worker.py), one DDP rank per process.
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import task

from ant_config import AntConfig, ModelConfig, TrainConfig
from ant_model import checkpoint
from ant_model.data import DomainData
from ant_model.evaluate import rank_targets
from ant_model.strategies import METHODS, PRETRAINED_METHODS, adapt, method_config, pretrain
from ant_model.train import pick_device
from tasks.caching import CODE_VERSION, keyed
from warehouse import registry, training
from warehouse.store import Warehouse, WarehouseError

log = logging.getLogger(__name__)


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
    candidates = sorted((p for p in root.glob("*/*") if (p / "result.json").exists()),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    if version:
        candidates = [p for p in candidates if p.name == version]
    candidates = [p for p in candidates
                  if (checkpoint.read_meta(p / "best")["model"]["modalities"] == ["text"]) == text_only]
    if not candidates:
        raise WarehouseError(f"no finished pre-trained model{' ' + version if version else ''} under {root}: "
                             f"run `ant pretrain`{' with model.modalities [text]' if text_only else ''} first")
    return candidates[0] / "best"


@dataclass(frozen=True)
class Plan:
    """What one training run will train, and where: its version hashes all of it."""
    version: str
    folder: Path
    model: ModelConfig
    train: TrainConfig
    lineage: dict
    modalities: list[str]
    parent: Path | None = None


def pretrain_plan(config: AntConfig, domains: list[str], text_only: bool = False) -> Plan:
    model_cfg = config.model.model_copy(update={"modalities": ["text"]}) if text_only else config.model
    lineage = _lineage(config, domains, model_cfg.modalities)
    version = version_of({"model": model_cfg.model_dump(), "train": config.pretrain.model_dump(),
                          "data": lineage, "code": CODE_VERSION})
    folder = artifacts(config) / "pretrain" / ("text-only" if text_only else "ant") / version
    return Plan(version, folder, model_cfg, config.pretrain, lineage, model_cfg.modalities)


def adapt_plan(config: AntConfig, target: str, method: str, pretrained: str | None = None,
               seed: int | None = None) -> Plan:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    train_cfg = config.adapt if seed is None else config.adapt.model_copy(update={"seed": seed})
    parent = None
    if method in PRETRAINED_METHODS:
        parent = pretrained_dir(config, pretrained, text_only=method == "unisrec")
    model_cfg = method_config(method, config.model)
    modalities = model_cfg.modalities if parent is None else checkpoint.read_meta(parent)["model"]["modalities"]
    lineage = {"method": method, "model": model_cfg.model_dump(), "train": train_cfg.model_dump(),
               "data": _lineage(config, [target], modalities),
               "parent": parent.parent.name if parent else None, "code": CODE_VERSION}
    version = version_of(lineage)
    return Plan(version, artifacts(config) / "adapt" / target / method / version, model_cfg, train_cfg,
                lineage, modalities, parent)


def train_pretrain(config: AntConfig, domains: list[str], plan: Plan) -> dict:
    """Pre-train `plan` in this process (one rank of it under torchrun); the fit's summary."""
    data = [domain_data(config, d, plan.modalities) for d in domains]
    _, fit = pretrain(data, plan.model, plan.train, checkpoint_dir=plan.folder)
    return {"best_epoch": fit.best_epoch, "valid": fit.best_valid, "seconds": round(fit.seconds, 1)}


def _torchrun_pretrain(config: AntConfig, domains: list[str], text_only: bool, plan: Plan,
                       processes: int) -> dict:
    """Pre-train `plan` under `torchrun` with `processes` ranks (DDP; NCCL on GPUs, gloo on CPU)."""
    plan.folder.mkdir(parents=True, exist_ok=True)
    request = plan.folder / "torchrun.json"
    request.write_text(json.dumps({"config": config.model_dump(mode="json"), "domains": domains,
                                   "text_only": text_only}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(processes), "-m", "tasks.pretrain_worker", str(request)]
    log.info("pre-training under torchrun: %s", " ".join(command))
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun pre-training failed (exit {done.returncode}); its log is above. "
                           f"Run again to resume from {plan.folder / 'last'}")
    return json.loads((plan.folder / "fit.json").read_text())


def run_pretrain(config: AntConfig, domains: list[str], text_only: bool = False) -> dict:
    plan = pretrain_plan(config, domains, text_only)
    if (plan.folder / "result.json").exists():
        log.info("pre-trained model %s exists: nothing to train", plan.version)
        return json.loads((plan.folder / "result.json").read_text())
    processes = config.orchestration.pretrain_processes
    fit = (_torchrun_pretrain(config, domains, text_only, plan, processes) if processes > 1
           else train_pretrain(config, domains, plan))
    result = {"version": plan.version, "path": str(plan.folder / "best"), "domains": domains,
              "lineage": plan.lineage, **fit}
    registry.register(Warehouse(config.home), plan.version, "pretrain", result["path"],
                      {"data": plan.lineage, "config": {"model": plan.model.model_dump(), "train": plan.train.model_dump()},
                       "code_version": CODE_VERSION}, method="text-only" if text_only else "ant",
                      valid=fit["valid"], flow_run_id=_flow_run_id())
    (plan.folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run
    return str(flow_run.id) if flow_run.id else None


def run_adapt(config: AntConfig, target: str, method: str, pretrained: str | None = None,
              seed: int | None = None) -> dict:
    plan = adapt_plan(config, target, method, pretrained, seed)
    if (plan.folder / "result.json").exists():
        return json.loads((plan.folder / "result.json").read_text())
    data = domain_data(config, target, plan.modalities)
    model, fit = adapt(method, data, config.model, plan.train, plan.parent, checkpoint_dir=plan.folder)
    test = rank_targets(model, data.tensors(pick_device(plan.train.device)), data.test,
                        plan.train.eval_batch_size)
    np.save(plan.folder / "test_ranks.npy", test.ranks)
    parent = plan.parent.parent.name if plan.parent else None
    result = {"method": method, "target": target, "version": plan.version, "seed": plan.train.seed,
              **test.metrics(), "valid": fit.best_valid, "best_epoch": fit.best_epoch,
              "pretrained": parent, "path": str(plan.folder / "best")}
    registry.register(Warehouse(config.home), plan.version, "adapt", result["path"], plan.lineage, target=target,
                      method=method, seed=plan.train.seed, parent=parent, valid=fit.best_valid,
                      test=test.metrics(), flow_run_id=_flow_run_id())
    (plan.folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


pretrain_task = task(name="pretrain", task_run_name="pretrain {domains}", cache_key_fn=keyed(
    "pretrain", lambda p: pretrain_plan(p["config"], p["domains"], p.get("text_only", False)).version))(run_pretrain)
adapt_task = task(name="adapt", task_run_name="adapt {target} {method} seed {seed}", cache_key_fn=keyed(
    "adapt", lambda p: adapt_plan(p["config"], p["target"], p["method"], p.get("pretrained"),
                                  p.get("seed")).version))(run_adapt)


def _runs_of(parameters: dict) -> list:
    return [parameters["target"], sorted(r["version"] for r in parameters["results"])]


@task(name="promote", task_run_name="promote {target}", cache_key_fn=keyed("promote", _runs_of))
def promote_best(config: AntConfig, target: str, results: list[dict]) -> dict:
    """Serve `target` with the best method on validation, never one below scratch."""
    version, reason = registry.choose_for_promotion(results)
    registry.promote(Warehouse(config.home), version, reason)
    return {"target": target, "version": version, "reason": reason}
