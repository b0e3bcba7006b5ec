"""Where torch code runs: the one device rule shared by the recommender and the frozen encoders."""
from __future__ import annotations

import torch


def pick_device(setting: str) -> torch.device:
    """"auto" is CUDA when present, else the CPU; anything else is a torch device string."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def autocast(device: torch.device, dtype: str = "bf16", enabled: bool = True):
    """Mixed precision on CUDA only (CPU autocast is slower than float32 here)."""
    return torch.autocast(device.type, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16,
                          enabled=enabled and device.type == "cuda")
