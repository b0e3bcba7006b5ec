"""Checkpoints as safetensors + JSON, never pickles.

`model.safetensors` holds the weights (and, for resuming, `optimizer.safetensors` the
optimizer's tensors); `checkpoint.json` holds the architecture (model config and feature
widths), the item count and training progress. Loading into another architecture, or a file
that is not a valid checkpoint, is a `CheckpointError` that says which.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ant_config import ModelConfig
from ant_config.errors import UserError
from ant_model.model import ANT

MODEL_FILE, OPTIM_FILE, META_FILE = "model.safetensors", "optimizer.safetensors", "checkpoint.json"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be loaded here."""


MAX_ITEMS = 2**31 - 1  # item indices are int32 in the warehouse


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def save(folder: Path, model: ANT, meta: dict, optimizer: torch.optim.Optimizer | None = None,
         state: dict[str, torch.Tensor] | None = None) -> None:
    """`model`'s weights (or `state`, weights of the same architecture, e.g. an earlier epoch's),
    its architecture and `meta`; with `optimizer`, its tensors too (for resuming)."""
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_save(model.state_dict() if state is None else state, folder / MODEL_FILE)
    if optimizer is not None:
        _atomic_save(_flatten_optimizer(optimizer), folder / OPTIM_FILE)
    payload = {"model": model.cfg.model_dump(), **meta}  # meta: feature_dims, n_items, progress
    tmp = folder / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, folder / META_FILE)


def read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder}: no readable {META_FILE} ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{folder / META_FILE}: not a checkpoint description (a JSON object)")
    return meta


def model_config(meta: dict, folder: Path) -> ModelConfig:
    """The architecture a checkpoint describes, validated."""
    try:
        cfg = ModelConfig(**meta["model"])
    except (KeyError, TypeError, ValidationError) as exc:
        detail = "no 'model' entry" if isinstance(exc, KeyError) else " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{folder / META_FILE}: invalid model description ({detail}); "
                              f"the checkpoint is damaged or from another program") from exc
    if cfg.modalities is None:
        raise CheckpointError(f"{folder / META_FILE}: the model's modalities are not recorded")
    return cfg


def feature_dims(meta: dict, folder: Path) -> dict[str, int]:
    """The feature widths a checkpoint was trained on, validated."""
    dims = meta.get("feature_dims")
    if not isinstance(dims, dict) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                             for d in dims.values()):
        raise CheckpointError(f"{folder / META_FILE}: 'feature_dims' is missing or not a mapping of "
                              f"modality to a positive integer width ({dims!r}); the checkpoint is damaged")
    return dims


def load_weights(folder: Path, model: ANT, strict: bool = True) -> None:
    """Weights from `folder` into `model`; the architectures must match."""
    try:
        state = load_file(str(folder / MODEL_FILE))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{folder / MODEL_FILE}: not a readable safetensors file ({exc})") from exc
    ours = model.state_dict()
    wrong = [k for k in state if k in ours and state[k].shape != ours[k].shape]
    missing = [k for k in ours if k not in state]
    if wrong or (strict and (missing or set(state) - set(ours))):
        raise CheckpointError(
            f"{folder}: checkpoint of another architecture (shape mismatch: {wrong[:3]}, "
            f"missing: {missing[:3]}, unexpected: {sorted(set(state) - set(ours))[:3]})")
    model.load_state_dict(state, strict=strict)


def load(folder: Path) -> tuple[ANT, dict]:
    """A model rebuilt from its checkpoint's own description, and that description."""
    meta = read_meta(folder)
    n_items = meta.get("n_items")
    if not isinstance(n_items, int) or isinstance(n_items, bool) or not 1 <= n_items < MAX_ITEMS:
        raise CheckpointError(f"{folder / META_FILE}: 'n_items' ({n_items!r}) is not a catalogue size "
                              f"(a positive integer below {MAX_ITEMS}); the checkpoint is damaged")
    dims, cfg = feature_dims(meta, folder), model_config(meta, folder)
    if missing := [m for m in cfg.modalities if m not in dims]:
        raise CheckpointError(f"{folder / META_FILE}: the model reads {', '.join(missing)} but records no width "
                              f"for it in 'feature_dims' ({dims}); the checkpoint is damaged")
    try:
        model = ANT(dims, cfg, n_items)
    except (ValueError, RuntimeError, MemoryError) as exc:
        raise CheckpointError(f"{folder / META_FILE}: no model can be built from this description "
                              f"({type(exc).__name__}: {exc}); the checkpoint is damaged") from exc
    load_weights(folder, model)
    return model, meta


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for pid, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            out[f"{pid}.{name}"] = torch.as_tensor(value)
    return out


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> bool:
    path = folder / OPTIM_FILE
    if not path.exists():
        return False
    try:
        flat = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    state = optimizer.state_dict()
    restored: dict[int, dict] = {}
    for key, value in flat.items():
        pid, name = key.split(".", 1)
        restored.setdefault(int(pid), {})[name] = value
    state["state"] = restored
    optimizer.load_state_dict(state)
    return True
