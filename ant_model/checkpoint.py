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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ant_config import ModelConfig
from ant_model.model import ANT

MODEL_FILE, OPTIM_FILE, META_FILE = "model.safetensors", "optimizer.safetensors", "checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded here."""


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def save(folder: Path, model: ANT, meta: dict, optimizer: torch.optim.Optimizer | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items()}
    _atomic_save(state, folder / MODEL_FILE)
    if optimizer is not None:
        _atomic_save(_flatten_optimizer(optimizer), folder / OPTIM_FILE)
    payload = {"model": model.cfg.model_dump(), **meta}  # meta: feature_dims, n_items, progress
    tmp = folder / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, folder / META_FILE)


def read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder}: no readable {META_FILE} ({exc})") from exc


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
    model = ANT(meta["feature_dims"], ModelConfig(**meta["model"]), meta["n_items"])
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
    flat = load_file(str(path))
    state = optimizer.state_dict()
    restored: dict[int, dict] = {}
    for key, value in flat.items():
        pid, name = key.split(".", 1)
        restored.setdefault(int(pid), {})[name] = value
    state["state"] = restored
    optimizer.load_state_dict(state)
    return True
